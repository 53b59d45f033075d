"""Entry point Pulumi runs for ``--policy-pack policies``: serve the pack's rules."""

from __future__ import annotations

import sys
from pathlib import Path

# Pulumi starts the pack from this directory; the rules import the `policies` and
# `daskplatform` packages from the repository root, as the tests do.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pulumi_policy import EnforcementLevel, PolicyPack

from policies.rules import POLICIES

PolicyPack(
    name="dask-platform",
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=POLICIES,
)
