"""Starts, watches and stops the Dask processes of one node.

Every process runs in its own session (process group), confined by its cgroups. The
agent is a child subreaper: warm children (double-forked by the fork server) and cold
ones both end up as its children, so it reaps them and records their exit codes.
Processes survive an agent restart; the next agent re-adopts them from the state file
and watches them through a pidfd (their exit code is then unknown).
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import logging
import os
import shutil
import signal
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from daskplatform.identifiers import safe_name
from daskplatform.node.aws_config import user_aws_env
from daskplatform.node.confine import Confinement
from daskplatform.node.launch import WARM_KINDS
from daskplatform.node.ports import PortAllocator, PortsExhausted
from daskplatform.node.records import (
    KEEP_ENDED,
    Record,
    StateFile,
    is_alive,
    start_ticks,
)
from daskplatform.node.spec import (
    MIN_USER_UID,
    Kind,
    RunAs,
    Spawn,
    SpawnError,
    fill_placeholders,
)
from daskplatform.node.warm import ForkServer, ForkServerDown
from daskplatform.runtime_version import running_version

log = logging.getLogger(__name__)

PR_SET_CHILD_SUBREAPER = 36
GIB = 1 << 30
FORK_SERVER_RESTART_S = (0.0, 1.0, 5.0, 30.0)
"""Waits before restarting a dead fork server: at once, then backing off."""
WARM_ENV = {"DASK_DISTRIBUTED__WORKER__MULTIPROCESSING_METHOD": "fork"}
"""The nanny forks its worker (already warm) instead of starting a fresh interpreter."""
SCRATCH_ENV = "DASK_TEMPORARY_DIRECTORY"
"""Dask's scratch space, where workers spill: the process's own directory, on the node's
local disk and removed with the process, rather than ``/tmp`` (a tmpfs on Amazon Linux
2023, where spilled bytes would stay in RAM and count against the cgroup)."""


def closed_parent(folder: Path) -> Path | None:
    """The first folder above ``folder`` that other users may not pass (no o+x): a
    process under a user's uid could not reach its own directory below it."""
    for parent in reversed(folder.resolve().parents):
        if not parent.stat().st_mode & 0o001:
            return parent
    return None


class NotFound(LookupError):
    pass


class Conflict(ValueError):
    pass


class NoCapacity(RuntimeError):
    pass


@dataclass(frozen=True)
class NodeShape:
    node_id: str
    role: Kind
    host: str
    """Address the processes listen on and the agent advertises."""
    cores: float
    memory_gb: float
    port_ranges: dict[str, tuple[int, int]]
    """Kind of process this node starts -> the ports its processes listen on."""


class Supervisor:
    def __init__(self, shape: NodeShape, workdir: Path, confinement: Confinement,
                 warm: bool = True, homes: Path | None = None,
                 min_user_uid: int = MIN_USER_UID) -> None:
        self.shape = shape
        self._workdir = workdir
        self._homes = homes or workdir / "homes"
        """Users' homes (``/srv/homes`` on hosts: the shared file system)."""
        self._min_user_uid = min_user_uid
        self._confinement = confinement
        self._ports = {kind: PortAllocator(ports, shape.host)
                       for kind, ports in shape.port_ranges.items()}
        self._state = StateFile(workdir / "state.json")
        self._records: dict[str, Record] = {}
        self._by_pid: dict[int, Record] = {}
        self._ended: dict[str, asyncio.Event] = {}
        self._unclaimed: OrderedDict[int, int] = OrderedDict()
        """Exit codes reaped before the spawn call learnt the pid (a very fast death)."""
        self._pidfds: dict[str, int] = {}
        self._fork_server = ForkServer(workdir / "forkserver.log") if warm else None
        self._restarts = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.runtime_version = running_version()
        """What this agent, and every process it starts, runs (fixed at start)."""
        self.upgrade: dict[str, object] | None = None
        """The last in-place upgrade asked of this node: version, state, message."""
        self._aws_env: dict[str, str] = {}
        """AWS_CONFIG_FILE and friends for every process (node/aws_config.py)."""

    # ------------------------------------------------------------ life cycle

    async def start(self) -> None:
        # Each process directory belongs to the process's user (0700); the folders above
        # them only let users through to their own (0711: no listing).
        for sub, mode in (("procs", 0o711), ("logs", 0o700)):
            (self._workdir / sub).mkdir(mode=mode, parents=True, exist_ok=True)
            (self._workdir / sub).chmod(mode)
        self._workdir.chmod(0o711)
        self._aws_env = user_aws_env(self._workdir)
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            log.warning("cannot become a child subreaper; warm children's exit codes "
                        "will be unknown")
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGCHLD, self._reap)
        self._adopt()
        if self._fork_server is not None:
            await self._start_fork_server()

    async def close(self) -> None:
        """Leave the Dask processes running (documented), stop watching them."""
        for task in list(self._tasks):
            task.cancel()
        for proc_id in list(self._pidfds):
            self._unwatch(proc_id)
        asyncio.get_running_loop().remove_signal_handler(signal.SIGCHLD)
        if self._fork_server is not None:
            self._fork_server.close()
        self._confinement.close()
        self._save()

    async def _start_fork_server(self) -> None:
        assert self._fork_server is not None
        try:
            await self._fork_server.start()
        except (TimeoutError, ForkServerDown, OSError, ValueError) as exc:
            log.warning("fork server unavailable, spawning cold: %s", exc)
            self._fork_server.close()

    def _background(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _restart_fork_server(self) -> None:
        wait = FORK_SERVER_RESTART_S[min(self._restarts, len(FORK_SERVER_RESTART_S) - 1)]
        self._restarts += 1
        await asyncio.sleep(wait)
        await self._start_fork_server()

    # ------------------------------------------------------------ queries

    def capacity(self) -> dict[str, object]:
        """What the node offers and what its processes take; a process being stopped
        takes nothing any more (its successor may start while it winds down)."""
        live = [r for r in self._records.values() if r.live and not r.stop_requested]
        return {
            "node_id": self.shape.node_id, "role": self.shape.role, "host": self.shape.host,
            "cores": self.shape.cores, "memory_gb": self.shape.memory_gb,
            "used_cores": sum(r.cores for r in live),
            "used_memory_gb": sum(r.memory_gb for r in live),
            "processes": len(live), "confinement": self._confinement.mode,
            "warm": bool(self._fork_server and self._fork_server.ready),
            "fork_server_pid": self._fork_server.pid if self._fork_server else None,
            "runtime_version": self.runtime_version, "upgrade": self.upgrade,
        }

    def processes(self) -> list[Record]:
        return list(self._records.values())

    def get(self, proc_id: str) -> Record:
        try:
            return self._records[proc_id]
        except KeyError:
            raise NotFound(f"no process {proc_id!r} on node {self.shape.node_id}") from None

    def log_path(self, proc_id: str) -> Path:
        self.get(proc_id)
        return self._log(proc_id)

    # Ids are checked when a spawn is parsed; checked again where they become paths.

    def _log(self, proc_id: str) -> Path:
        return self._workdir / "logs" / f"{safe_name(proc_id, 'id')}.log"

    def _home(self, proc_id: str) -> Path:
        """The process's private working directory."""
        return self._workdir / "procs" / safe_name(proc_id, "id")

    # ------------------------------------------------------------ spawn

    async def spawn(self, spec: Spawn) -> tuple[Record, bool]:
        """Start ``spec``; (record, created). Same id and spec again: the existing one."""
        existing = self._records.get(spec.id)
        if existing is not None:
            if existing.fingerprint == spec.fingerprint():
                return existing, False
            raise Conflict(f"process {spec.id!r} exists with a different spec")
        if spec.kind not in self.shape.port_ranges:
            raise SpawnError(f"kind: this is a {self.shape.role} node; it starts only "
                             f"{' and '.join(self.shape.port_ranges)} processes, not "
                             f"{spec.kind!r}")
        self._check_run_as(spec)
        self._check_fits(spec)
        try:
            ports = self._ports[spec.kind].allocate(spec.port_count())
        except PortsExhausted as exc:
            raise NoCapacity(str(exc)) from None
        record = Record(id=spec.id, kind=spec.kind, cores=spec.cores,
                        memory_gb=spec.memory_gb, labels=dict(spec.labels), ports=ports,
                        fingerprint=spec.fingerprint())
        self._records[spec.id] = record
        self._ended[spec.id] = asyncio.Event()
        try:
            await self._launch(spec, record)
        except Exception:
            self._finish(record, None)
            raise
        return record, True

    def _check_run_as(self, spec: Spawn) -> None:
        if spec.run_as is None:
            return
        if os.geteuid() != 0:
            raise SpawnError(f"run_as: this agent runs as uid {os.geteuid()} and cannot start "
                             "processes as other users; run it as root (the hosts' unit "
                             "does), or leave run_as out")
        if spec.run_as.uid < self._min_user_uid or spec.run_as.gid < self._min_user_uid:
            raise SpawnError(f"run_as: uid and gid must be at least {self._min_user_uid} (a "
                             f"user's, not a system account's), got {spec.run_as.uid} and "
                             f"{spec.run_as.gid}")
        closed = closed_parent(self._workdir)
        if closed is not None:
            raise SpawnError(f"run_as: users cannot reach this agent's --workdir "
                             f"{self._workdir}: {closed} lets no other user through (mode "
                             f"{closed.stat().st_mode & 0o777:o}); give the folders above it "
                             "o+x, or choose a --workdir under a folder users may pass")

    def _user_home(self, run_as: RunAs) -> Path:
        """The user's home, created on first use: owned by them, mode 0700. An existing
        one is used as it is (never through a symlink)."""
        home = self._homes / safe_name(run_as.name, "run_as.name")
        self._homes.mkdir(mode=0o755, parents=True, exist_ok=True)
        try:
            home.mkdir(mode=0o700)
            os.chown(home, run_as.uid, run_as.gid)
        except FileExistsError:
            if home.is_symlink() or not home.is_dir():
                raise SpawnError(f"run_as: {home} exists and is not a directory") from None
        return home

    def _check_fits(self, spec: Spawn) -> None:
        cap = self.capacity()
        free_cores = self.shape.cores - float(cap["used_cores"])  # type: ignore[arg-type]
        free_memory = self.shape.memory_gb - float(cap["used_memory_gb"])  # type: ignore[arg-type]
        if spec.cores > free_cores + 1e-9 or spec.memory_gb > free_memory + 1e-9:
            raise NoCapacity(
                f"does not fit: asked {spec.cores:g} cores / {spec.memory_gb:g} GB, free "
                f"{free_cores:g} cores / {free_memory:g} GB on node {self.shape.node_id}")

    def _argv(self, spec: Spawn, ports: list[int]) -> list[str]:
        argv = [fill_placeholders(a, self.shape.host, ports) for a in spec.argv]
        if spec.kind == "worker":  # Dask's own limits, also the only ones without cgroups
            if "--nthreads" not in argv:  # whole cores, as dask-gateway counts them
                argv += ["--nthreads", str(max(1, int(spec.cores)))]
            if "--memory-limit" not in argv:
                argv += ["--memory-limit", str(int(spec.memory_gb * GIB))]
        return argv

    def _env(self, spec: Spawn, ports: list[int], home: Path, warm: bool) -> dict[str, str]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
               "HOME": str(home), "PYTHONUNBUFFERED": "1", SCRATCH_ENV: str(home)}
        if spec.run_as is not None:
            env.update(HOME=str(self._user_home(spec.run_as)), USER=spec.run_as.name,
                       LOGNAME=spec.run_as.name)
        if warm and spec.kind == "worker":
            env.update(WARM_ENV)
        env.update(self._aws_env)
        env.update({k: fill_placeholders(v, self.shape.host, ports)
                    for k, v in spec.env.items()})
        return env

    async def _launch(self, spec: Spawn, record: Record) -> None:
        home = self._home(spec.id)
        home.mkdir(mode=0o700)
        owner = (spec.run_as.uid, spec.run_as.gid) if spec.run_as else None
        if owner:
            os.chown(home, *owner)
        for name, text in spec.files.items():  # the cluster's TLS key among them
            fd = os.open(home / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            if owner:
                os.fchown(fd, *owner)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
        cpu_limit, memory_limit_gb = spec.cgroup_limits
        group = self._confinement.create(spec.id, cpu_limit, int(memory_limit_gb * GIB))
        # A notebook opens in the user's home (their files on the shared file system).
        cwd = self._user_home(spec.run_as) if spec.kind == "notebook" and spec.run_as \
            else home
        launch = {"kind": spec.kind, "argv": self._argv(spec, record.ports),
                  "cwd": str(cwd), "log": str(self._log(spec.id)),
                  "procs_files": list(group.procs_files),
                  "uid": owner[0] if owner else None, "gid": owner[1] if owner else None}
        pid = None
        if self._fork_server is not None and self._fork_server.ready \
                and spec.kind in WARM_KINDS:
            try:
                pid = await self._fork_server.spawn(
                    {**launch, "env": self._env(spec, record.ports, home, warm=True)})
                record.warm = True
            except ForkServerDown as exc:
                log.warning("warm spawn of %s failed, starting it cold: %s", spec.id, exc)
        if pid is None:
            pid = self._spawn_cold({**launch, "env": self._env(spec, record.ports, home,
                                                               warm=False)}, home)
        record.pid = pid
        record.start_ticks = start_ticks(pid)
        self._by_pid[pid] = record
        log.info("started %s %s pid %s (%s)", spec.kind, spec.id, pid,
                 "warm" if record.warm else "cold")
        if pid in self._unclaimed:
            self._finish(record, self._unclaimed.pop(pid))
            return
        self._save()
        self._background(self._watch_ports(record))

    def _spawn_cold(self, launch: dict[str, object], home: Path) -> int:
        """A fresh interpreter running the same launcher (the fallback path)."""
        spec_path = home / ".launch.json"
        fd = os.open(spec_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(launch, fh)
        return os.posix_spawn(
            sys.executable,
            [sys.executable, "-m", "daskplatform.node.launch", str(spec_path)],
            launch["env"],  # type: ignore[arg-type]
            setsid=True,
        )

    async def _watch_ports(self, record: Record) -> None:
        """starting -> running once one of its ports accepts connections."""
        while record.state == "starting":
            if not record.ports:
                record.state = "running"
                break
            for port in record.ports:
                try:
                    _, writer = await asyncio.wait_for(
                        asyncio.open_connection(self.shape.host, port), 0.5)
                except (TimeoutError, OSError):
                    continue
                writer.close()
                if record.state == "starting":
                    record.state = "running"
                break
            else:
                await asyncio.sleep(0.05)
        self._save()

    # ------------------------------------------------------------ stop and exit

    async def stop(self, proc_id: str, grace: float) -> Record:
        record = self.get(proc_id)
        if not record.live:
            return record
        record.stop_requested = True
        ended = self._ended[proc_id]
        if record.pid is not None:
            _signal_group(record.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(ended.wait(), grace)
            except TimeoutError:
                log.warning("%s did not stop within %gs: SIGKILL", proc_id, grace)
                _signal_group(record.pid, signal.SIGKILL)
                await asyncio.wait_for(ended.wait(), 10)
        return record

    def _reap(self) -> None:
        """SIGCHLD: collect every ended child (ours, re-parented, or the fork server)."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            code = os.waitstatus_to_exitcode(status)
            if self._fork_server is not None and pid == self._fork_server.pid:
                log.warning("fork server %s exited (%s); restarting it", pid, code)
                self._fork_server.died()
                self._background(self._restart_fork_server())
            elif pid in self._by_pid:
                self._finish(self._by_pid[pid], code)
            else:
                self._unclaimed[pid] = code
                while len(self._unclaimed) > 1024:
                    self._unclaimed.popitem(last=False)

    def _finish(self, record: Record, code: int | None) -> None:
        """Record the end, kill leftovers of its group and cgroups, free everything."""
        if not record.live:
            return
        record.exit_code = code
        record.ended_at = time.time()
        record.state = "stopped" if record.stop_requested or code == 0 else "failed"
        if record.pid is not None:
            self._by_pid.pop(record.pid, None)
            _signal_group(record.pid, signal.SIGKILL)
        self._unwatch(record.id)
        self._confinement.remove(self._confinement.group_of(record.id))
        self._ports[record.kind].release(record.ports)
        shutil.rmtree(self._home(record.id), ignore_errors=True)
        log.info("%s %s ended: %s (exit %s)", record.kind, record.id, record.state, code)
        self._prune()
        self._save()
        event = self._ended.get(record.id)
        if event is not None:
            event.set()

    def _prune(self) -> None:
        ended = sorted((r for r in self._records.values() if not r.live),
                       key=lambda r: r.ended_at or 0, reverse=True)
        for record in ended[KEEP_ENDED:]:
            del self._records[record.id]
            self._ended.pop(record.id, None)
            self._log(record.id).unlink(missing_ok=True)

    # ------------------------------------------------------------ restart

    def _adopt(self) -> None:
        """Re-adopt live processes of a previous agent run; close out dead ones."""
        for record in self._state.load():
            self._records[record.id] = record
            self._ended[record.id] = asyncio.Event()
            if not record.live:
                continue
            if is_alive(record):
                assert record.pid is not None
                self._by_pid[record.pid] = record
                self._ports[record.kind].reserve(record.ports)
                self._watch_pidfd(record)
                log.info("re-adopted %s %s pid %s", record.kind, record.id, record.pid)
                if record.state == "starting":
                    self._background(self._watch_ports(record))
            else:
                self._finish(record, None)
        self._save()

    def _watch_pidfd(self, record: Record) -> None:
        """Not our child any more: learn of its end through a pidfd (exit code unknown)."""
        assert record.pid is not None
        fd = os.pidfd_open(record.pid)
        self._pidfds[record.id] = fd
        asyncio.get_running_loop().add_reader(fd, self._finish, record, None)

    def _unwatch(self, proc_id: str) -> None:
        fd = self._pidfds.pop(proc_id, None)
        if fd is not None:
            asyncio.get_running_loop().remove_reader(fd)
            os.close(fd)

    def _save(self) -> None:
        self._state.save(list(self._records.values()))


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
