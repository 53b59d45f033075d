"""Confine each Dask process to its cores and memory.

Preference order: on a systemd host with cgroup v2 (AWS), a delegated scope of its own
(``dask-platform-processes.scope``, see :func:`scope_command`); writable cgroup v1
``cpu`` and ``memory`` hierarchies (dev machines, the rehearsal), else Dask's own nanny
limits only, with a warning. The agent prepares a group per process; the child writes
its own pid into the group's ``cgroup.procs`` before it imports anything heavy, so no
work runs unconfined.

Why a scope and not the agent's own unit: cgroup v2 allows no process in a group that
hands controllers down, and systemd before 254 (Amazon Linux 2023 ships 252) restarts a
service in the root of its own cgroup, so an agent that confined processes below itself
could not be restarted while they run (EBUSY, and ``Restart=always`` loops). The agent's
own cgroup stays a leaf; the Dask processes live in the scope, which outlives agent
restarts and is kept alive between processes by a small anchor process.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import subprocess
import sys
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
    """A delegated v2 scope: its anchor lives in ``<base>/anchor``, processes in
    ``<base>/p-<id>`` with ``cpu.max``, ``memory.max`` and no swap."""

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


SYSTEMD_RUNTIME = Path("/run/systemd/system")
"""Exists when systemd is PID 1 (sd_booted)."""
CGROUP2_ROOT = Path("/sys/fs/cgroup")
PROCESSES_SLICE = "dask-platform.slice"
PROCESSES_SCOPE = "dask-platform-processes.scope"
"""The delegated scope every Dask process of a node lives in (never the agent's unit)."""
CONTROLLERS = ("cpu", "memory")
ANCHOR = "anchor"
SCOPE_READY_SECONDS = 10.0


def scope_dir(root: Path | None = None) -> Path:
    return (root or CGROUP2_ROOT) / PROCESSES_SLICE / PROCESSES_SCOPE


def scope_command(python: str = sys.executable) -> list[str]:
    """Creates the scope (``Delegate=yes``: the agent may make groups and set limits in
    it) around an anchor process that keeps it alive while no Dask process runs."""
    return ["systemd-run", "--scope", "--quiet", "--collect",
            f"--unit={PROCESSES_SCOPE}", f"--slice={PROCESSES_SLICE}",
            "--property=Delegate=yes", "--",
            python, "-m", "daskplatform.node.confine", "anchor"]


def prepare_scope(scope: Path, anchor_pid: int) -> None:
    """The layout inside the scope: the anchor in a leaf of its own, then the cpu and
    memory controllers handed down to the processes' groups."""
    leaf = scope / ANCHOR
    leaf.mkdir(exist_ok=True)
    _write(leaf / "cgroup.procs", str(anchor_pid))
    _write(scope / "cgroup.subtree_control",
           " ".join(f"+{ctrl}" for ctrl in CONTROLLERS))


def scope_ready(scope: Path) -> bool:
    try:  # the kernel lists "cpu memory"; a stand-in directory keeps what was written
        enabled = (scope / "cgroup.subtree_control").read_text().split()
    except OSError:
        return False
    return set(CONTROLLERS) <= {name.lstrip("+") for name in enabled}


def _try_v2(node_id: str) -> Confinement | None:
    """The processes' scope on a systemd host with cgroup v2: reused when an earlier
    agent made it (it outlives agent restarts), else created now."""
    if not SYSTEMD_RUNTIME.is_dir():
        return None
    if not any(fstype == "cgroup2" and Path(point) == CGROUP2_ROOT
               for point, fstype, _ in cgroup_mounts()):
        return None
    scope = scope_dir()
    if not scope_ready(scope):
        # Its own session: the anchor outlives this agent (KillMode=process).
        subprocess.Popen(scope_command(), stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + SCOPE_READY_SECONDS
        while not scope_ready(scope):
            if time.monotonic() > deadline:
                log.warning("systemd did not create %s within %gs", scope,
                            SCOPE_READY_SECONDS)
                return None
            time.sleep(0.1)
    return CgroupV2(scope)


def anchor() -> None:
    """``python -m daskplatform.node.confine anchor``: run by systemd-run inside the new
    scope; lays it out, then waits for ever (the scope lives while something is in it)."""
    prepare_scope(CGROUP2_ROOT / _own_paths()[""].lstrip("/"), os.getpid())
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    while True:
        signal.pause()


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



if __name__ == "__main__" and sys.argv[1:] == ["anchor"]:
    anchor()
