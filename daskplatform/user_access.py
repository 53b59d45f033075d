"""Whether users' own uids can run this installation: every process of a user runs under
their uid, so the Python environment and the runtime's source must be readable by
anyone, with every folder above them open to pass through (o+x). A checkout under a
private home (``/root`` is 0700) is not."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import daskplatform


def closed_folders(*more: Path) -> list[Path]:
    """Folders above the environment, the runtime, or ``more`` (a state directory whose
    homes and process folders users reach) that other users cannot pass."""
    closed = []
    for start in (Path(sys.prefix), Path(sys.executable).resolve().parent,
                  Path(daskplatform.__file__).resolve().parent, *more):
        for folder in (start, *start.parents):
            if not folder.stat().st_mode & stat.S_IXOTH and folder not in closed:
                closed.append(folder)
    return closed


def explain(closed: list[Path]) -> str:
    return (f"{', '.join(map(str, closed))} cannot be passed by other users, so processes "
            "cannot run under their users' uids; move the checkout (and its Python) where "
            f"others may read it, or: chmod o+x {' '.join(map(str, closed))}")
