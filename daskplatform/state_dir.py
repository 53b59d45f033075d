"""Where a runtime service keeps its state when not told: the directory systemd made
for it (``StateDirectory=`` in the host's unit sets ``$STATE_DIRECTORY``), else a
per-user directory, so hosts need no path in their command line."""

from __future__ import annotations

import os
from pathlib import Path

STATE_DIRECTORY_ENV = "STATE_DIRECTORY"


def default_state_dir(name: str) -> Path:
    """``$STATE_DIRECTORY``, or ``~/.local/state/dask-platform/<name>`` without systemd."""
    given = os.environ.get(STATE_DIRECTORY_ENV)
    return Path(given) if given else Path.home() / ".local/state/dask-platform" / name
