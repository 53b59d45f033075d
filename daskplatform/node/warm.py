"""Warm starts: a fork server with dask and distributed already imported.

Starting an interpreter and importing distributed costs 0.4-1.4 s per process; a
scheduler plus two workers with nannies is five of them. The agent starts this fork
server once (``python -m daskplatform.node.warm``), and each spawn is a fork of it.

Protocol (JSON lines): the server writes ``{"ready": true, "pid", "threads"}`` once
its imports are done, then answers each ``{"req": n, "spec": {...}}`` on stdin with
``{"req": n, "pid": p}`` or ``{"req": n, "error": "..."}``. It double-forks: the
intermediate exits at once, so the Dask process is re-parented to the agent (a child
subreaper), which reaps it and learns its exit code. EOF on stdin ends the server.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import json
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PRELOAD = (
    "dask",
    "distributed",
    "distributed.cli.dask_scheduler",
    "distributed.cli.dask_worker",
    "dask_gateway.scheduler_preload",
    "daskplatform.node.launch",
)
"""What a Dask scheduler or worker of the gateway imports before doing anything."""

SINGLE_THREAD_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
                     "MKL_NUM_THREADS": "1"}
"""numpy's BLAS starts a thread pool at import; forking with live threads is unsafe.
Dask's nanny sets the same values for its workers, so children lose nothing."""
MALLOC_ENV = {"MALLOC_TRIM_THRESHOLD_": "65536"}
"""Dask's nanny sets this before starting a worker, so glibc gives freed memory back to
the OS (docs/dask-tuning.md). glibc reads it once, at exec: a worker forked from here
inherits this process's malloc settings, so this process must start with it."""

START_TIMEOUT_S = 60.0


# ----------------------------------------------------------------- server side


def _spawn(spec: dict[str, Any]) -> int:
    """Double-fork a child running ``spec``; its pid, re-parented away from us."""
    from daskplatform.node import launch

    read_fd, write_fd = os.pipe()
    middle = os.fork()
    if middle == 0:
        try:
            os.close(read_fd)
            child = os.fork()
            if child == 0:
                os.close(write_fd)
                code = 1
                try:
                    code = launch.run(spec)
                except BaseException:  # noqa: BLE001 - the child must never return
                    traceback.print_exc()
                finally:
                    os._exit(code)
            os.write(write_fd, str(child).encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        answer = pipe.read()
    os.waitpid(middle, 0)
    if not answer:
        raise RuntimeError("fork failed in the intermediate process")
    return int(answer)


def serve() -> None:
    for module in PRELOAD:
        importlib.import_module(module)
    gc.freeze()  # keep the imported objects' pages shared with every child
    threads = len(os.listdir("/proc/self/task"))

    def reply(message: dict[str, Any]) -> None:
        os.write(1, (json.dumps(message) + "\n").encode())

    reply({"ready": True, "pid": os.getpid(), "threads": threads})
    requests = os.fdopen(0, "rb")
    for line in requests:
        request = json.loads(line)
        try:
            reply({"req": request["req"], "pid": _spawn(request["spec"])})
        except Exception as exc:  # noqa: BLE001 - report, keep serving
            reply({"req": request["req"], "error": f"{type(exc).__name__}: {exc}"})


# ------------------------------------------------------------------ agent side


class ForkServerDown(RuntimeError):
    """The fork server is not running or stopped answering; spawn cold instead."""


class ForkServer:
    """The agent's handle on its fork server process."""

    def __init__(self, log_path: Path) -> None:
        self._log_path = log_path
        self.pid: int | None = None
        self.ready = False
        self._stdin: int | None = None
        self._reader: asyncio.StreamReader | None = None
        self._transport: asyncio.ReadTransport | None = None
        self._lock = asyncio.Lock()
        self._req = 0

    async def start(self) -> None:
        """Start it and wait until its imports are done."""
        in_read, in_write = os.pipe()
        out_read, out_write = os.pipe()
        log_fd = os.open(self._log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        env = {**os.environ, **SINGLE_THREAD_ENV, **MALLOC_ENV}
        try:
            self.pid = os.posix_spawn(  # noqa: ASYNC221 - returns once the child exists
                sys.executable, [sys.executable, "-m", "daskplatform.node.warm"], env,
                file_actions=[(os.POSIX_SPAWN_DUP2, in_read, 0),
                              (os.POSIX_SPAWN_DUP2, out_write, 1),
                              (os.POSIX_SPAWN_DUP2, log_fd, 2)],
            )
        finally:
            for fd in (in_read, out_write, log_fd):
                os.close(fd)
        self._stdin = in_write
        loop = asyncio.get_running_loop()
        self._reader = asyncio.StreamReader(limit=1 << 20)
        self._transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(self._reader), os.fdopen(out_read, "rb"))
        hello = json.loads(await asyncio.wait_for(self._reader.readline(), START_TIMEOUT_S)
                           or b"{}")
        if not hello.get("ready"):
            raise ForkServerDown("fork server exited before it was ready")
        if hello["threads"] != 1:
            raise ForkServerDown(f"fork server has {hello['threads']} threads after its "
                                 "imports; forking it would be unsafe")
        self.ready = True
        log.info("fork server %s ready", self.pid)

    async def spawn(self, spec: dict[str, Any]) -> int:
        if not self.ready or self._stdin is None or self._reader is None:
            raise ForkServerDown("fork server not ready")
        async with self._lock:
            self._req += 1
            try:
                os.write(self._stdin, (json.dumps({"req": self._req, "spec": spec}) + "\n")
                         .encode())
                line = await asyncio.wait_for(self._reader.readline(), 10)
            except (TimeoutError, OSError) as exc:
                self.ready = False
                raise ForkServerDown(f"fork server failed: {exc!r}") from exc
        if not line:
            self.ready = False
            raise ForkServerDown("fork server closed its pipe")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"fork server could not fork: {answer['error']}")
        return int(answer["pid"])

    def died(self) -> None:
        """Called when the agent reaps the server; forget its pipes."""
        self.ready = False
        self.pid = None
        self.close()

    def close(self) -> None:
        """EOF on its stdin makes the server exit; children live on in their sessions."""
        if self._stdin is not None:
            os.close(self._stdin)
            self._stdin = None
        if self._transport is not None:
            self._transport.close()
            self._transport = None


if __name__ == "__main__":
    serve()
