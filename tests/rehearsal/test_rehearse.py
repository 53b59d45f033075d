"""``dask-platform rehearse --demo --once`` end to end, as CI runs it (root): the
scenario holds through the topology, and afterwards nothing of it is left."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from daskplatform.host.units import foreground_cgroups
from daskplatform.rehearsal import netns

ROOT = Path(__file__).resolve().parents[2]
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: network namespaces, "
                                "nftables, mounts (CI runs as root; sudo ./dev rehearse)")


def _rehearse(*args: str, user: list[str] = (), timeout: float = 900
              ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*user, sys.executable, "-m", "daskplatform.cli", "rehearse", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          check=False)


@needs_root
def test_the_demo_holds_and_leaves_nothing_behind(tmp_path: Path) -> None:
    state = tmp_path / "state"
    done = _rehearse("--demo", "--once", "--state-dir", str(state))
    out = done.stdout
    assert done.returncode == 0, out[-6000:] + done.stderr[-3000:]
    assert "rehearse: demo: every step held" in out
    for host in ("dp-alb", "dp-gateway", "dp-scheduler", "dp-worker-1", "dp-worker-2",
                 "dp-worker-3", "dp-aws", "dp-ipa"):
        assert f"rehearse: host {host} up" in out
    assert "rehearse: ready: https://10.0.32.10" in out
    assert "FAILED" not in out
    # Nothing left: namespaces (with their interfaces and nftables tables), processes,
    # the services' cgroups.
    assert netns.existing_namespaces() == []
    assert not [p for p in psutil.process_iter(["cmdline"])
                if str(state) in " ".join(p.info["cmdline"] or [])]
    parents = {group.parent for group in foreground_cgroups("any.service")}
    assert [g for parent in parents for g in parent.glob("ip-10-0-*")] == []
    assert "down: no namespace, interface, process, nftables table or cgroup" in out


@needs_root
def test_without_root_it_says_so_and_creates_nothing() -> None:
    done = _rehearse("--once", user=["setpriv", "--reuid", "65534", "--regid", "65534",
                                     "--clear-groups", "--"], timeout=60)
    assert done.returncode == 2
    assert "needs root" in done.stderr and "sudo ./dev rehearse" in done.stderr
    assert netns.existing_namespaces() == []
