"""Confine each Dask process to its cores and memory.

Preference order: a delegated cgroup v2 subtree (AWS hosts: the agent's systemd unit
has ``Delegate=yes``), writable cgroup v1 ``cpu`` and ``memory`` hierarchies (dev
machines), else Dask's own nanny limits only, with a warning. The agent prepares a
group per process; the child writes its own pid into the group's ``cgroup.procs``
before it imports anything heavy, so no work runs unconfined.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

CFS_PERIOD_US = 100_000
"""CPU quota period; quota = cores x period."""


@dataclass(frozen=True)
class Group:
    """Where one process is confined: the files its pid goes into, for joining."""

    procs_files: tuple[str, ...]
    dirs: tuple[Path, ...]


class Confinement:
    """Dask's nanny limits only: no cgroups (the fallback)."""

    mode = "nanny"

    def create(self, proc_id: str, cores: float, memory_bytes: int) -> Group:
        return Group((), ())

    def remove(self, group: Group) -> None:
        """Kill anything left in the group, then delete it."""
        for directory in group.dirs:
            for pid in _pids(directory):
                _kill(pid)
        for directory in group.dirs:
            _rmdir(directory)

    def group_of(self, proc_id: str) -> Group:
        """The group a process of a previous agent run was put in."""
        return Group((), ())

    def close(self) -> None:
        """Remove this node's own groups if no process group is left in them."""


class CgroupV1(Confinement):
    """Separate ``cpu`` and ``memory`` hierarchies, under this agent's own groups."""

    mode = "cgroup-v1"

    def __init__(self, bases: dict[str, Path]) -> None:
        self._bases = bases

    def _dirs(self, proc_id: str) -> dict[str, Path]:
        return {ctrl: base / proc_id for ctrl, base in self._bases.items()}

    def group_of(self, proc_id: str) -> Group:
        dirs = self._dirs(proc_id)
        return Group(tuple(str(d / "cgroup.procs") for d in dirs.values()),
                     tuple(dirs.values()))

    def create(self, proc_id: str, cores: float, memory_bytes: int) -> Group:
        dirs = self._dirs(proc_id)
        for directory in dirs.values():
            directory.mkdir(exist_ok=True)
        _write(dirs["cpu"] / "cpu.cfs_period_us", str(CFS_PERIOD_US))
        _write(dirs["cpu"] / "cpu.cfs_quota_us", str(max(1000, int(cores * CFS_PERIOD_US))))
        _write(dirs["memory"] / "memory.limit_in_bytes", str(memory_bytes))
        return self.group_of(proc_id)

    def close(self) -> None:
        for base in self._bases.values():
            try:
                base.rmdir()
            except OSError:
                pass  # processes still running (they outlive the agent) keep it


class CgroupV2(Confinement):
    """A delegated v2 subtree: the agent lives in ``<base>/agent``, processes in
    ``<base>/p-<id>`` with ``cpu.max`` and ``memory.max``."""

    mode = "cgroup-v2"

    def __init__(self, base: Path) -> None:
        self._base = base

    def group_of(self, proc_id: str) -> Group:
        directory = self._base / f"p-{proc_id}"
        return Group((str(directory / "cgroup.procs"),), (directory,))

    def create(self, proc_id: str, cores: float, memory_bytes: int) -> Group:
        group = self.group_of(proc_id)
        directory = group.dirs[0]
        directory.mkdir(exist_ok=True)
        _write(directory / "cpu.max", f"{max(1000, int(cores * CFS_PERIOD_US))} {CFS_PERIOD_US}")
        _write(directory / "memory.max", str(memory_bytes))
        _write(directory / "memory.swap.max", "0")
        return group


def group_name(node_id: str, workdir: Path) -> str:
    """This agent's cgroup v1 folder: its node id, and a digest of its workdir so two
    agents that share a machine (local mode, tests) never share a folder, while the same
    agent restarted finds its own again."""
    digest = hashlib.sha256(str(workdir.resolve()).encode()).hexdigest()[:8]
    return f"{node_id}-{digest}"


def detect(name: str) -> Confinement:
    """The best confinement this process may use; logs why it fell back."""
    for attempt in (_try_v2, _try_v1):
        try:
            found = attempt(name)
        except OSError as exc:
            log.info("%s not usable: %s", attempt.__name__.removeprefix("_try_"), exc)
            continue
        if found is not None:
            log.info("confinement: %s", found.mode)
            return found
    log.warning("no writable cgroups: processes are limited only by Dask's nanny "
                "(--nthreads, --memory-limit); a runaway process can starve its neighbours")
    return Confinement()


def cgroup_mounts(mountinfo: str = "/proc/self/mountinfo") -> list[tuple[str, str, set[str]]]:
    """(mount point, fs type, super options) of every cgroup mount in ``mountinfo``."""
    found = []
    with open(mountinfo, encoding="utf-8") as fh:
        for line in fh:
            before, _, after = line.partition(" - ")
            fstype, _source, options = after.split()[:3]
            if fstype in ("cgroup", "cgroup2"):
                found.append((before.split()[4], fstype, set(options.split(","))))
    return found


def _own_paths() -> dict[str, str]:
    """Controller (or '' for v2) -> this process's cgroup path."""
    paths: dict[str, str] = {}
    with open("/proc/self/cgroup", encoding="utf-8") as fh:
        for line in fh:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for ctrl in controllers.split(",") if controllers else [""]:
                paths[ctrl] = path
    return paths


def _try_v2(node_id: str) -> Confinement | None:
    mount = next((m for m, fstype, _ in cgroup_mounts() if fstype == "cgroup2"), None)
    own = _own_paths().get("")
    if mount is None or own is None:
        return None
    current = Path(mount) / own.lstrip("/")
    base = current.parent if current.name == "agent" else current
    available = (base / "cgroup.controllers").read_text().split()
    if not {"cpu", "memory"} <= set(available):
        log.info("cgroup v2 at %s offers controllers %s, need cpu and memory", base, available)
        return None
    if not os.access(base / "cgroup.subtree_control", os.W_OK):
        return None
    agent_leaf = base / "agent"
    agent_leaf.mkdir(exist_ok=True)
    # No process may sit in a group whose controllers are handed down: move us all out.
    for pid in _pids(base):
        _write(agent_leaf / "cgroup.procs", str(pid))
    _write(base / "cgroup.subtree_control", "+cpu +memory")
    return CgroupV2(base)


def _try_v1(node_id: str) -> Confinement | None:
    own = _own_paths()
    bases: dict[str, Path] = {}
    for mount, fstype, options in cgroup_mounts():
        for ctrl in ("cpu", "memory"):
            if fstype == "cgroup" and ctrl in options and ctrl in own:
                bases[ctrl] = Path(mount) / own[ctrl].lstrip("/") / "dask-platform" / node_id
    if set(bases) != {"cpu", "memory"}:
        return None
    for base in bases.values():
        base.mkdir(parents=True, exist_ok=True)
        if not os.access(base, os.W_OK):
            return None
    return CgroupV1(bases)


def _write(path: Path, value: str) -> None:
    with open(path, "w", encoding="ascii") as fh:
        fh.write(value)


def _pids(directory: Path) -> list[int]:
    try:
        return [int(p) for p in (directory / "cgroup.procs").read_text().split()]
    except FileNotFoundError:
        return []


def _kill(pid: int) -> None:
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        pass


def _rmdir(directory: Path) -> None:
    """cgroup directories are removed with rmdir, which fails while a killed task is
    still exiting: retry briefly."""
    for attempt in range(50):
        try:
            directory.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if attempt == 49:
                log.warning("could not remove cgroup %s: %s", directory, exc)
            time.sleep(0.02)

