"""Child processes of a supervisor (``dask-platform local``, the gateway host with
``--hub``): start each, wait until it answers, notice when one dies, and stop them so
that nothing of their process trees is left."""

from __future__ import annotations

import contextlib
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import psutil

from daskplatform.processes import stop_process

START_TIMEOUT = 60.0
"""Seconds one component may take to answer after it was started."""


def tail(path: Path | None, chars: int = 3000) -> str:
    """The end of a child's log (a child without a log file wrote to our output)."""
    if path is None:
        return "(its output is above)"
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"


def wait_http(url: str, alive: Callable[[], bool], what: str, log: Path | None) -> None:
    """Until ``url`` answers 200 (proxies answer 404 before their routes are in place),
    or the component dies, or START_TIMEOUT passes."""
    where = f" ({log})" if log else ""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"{what} exited during start; its log{where}:\n{tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not answer at {url} within {START_TIMEOUT:g}s; its "
                       f"log{where}:\n{tail(log)}")


class Children:
    """Child processes, each with a log file in ``log_dir`` (or, without one, writing to
    our own output, so a systemd unit's log holds them all), stopped one by one."""

    def __init__(self, log_dir: Path | None) -> None:
        self.log_dir = log_dir
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, argv: list[str], env: dict[str, str],
              cwd: Path | None = None) -> subprocess.Popen[bytes]:
        log_path = self.log(name)
        with open(log_path, "ab") if log_path else contextlib.nullcontext() as log:
            # Own session: a terminal's Ctrl-C reaches only us, and we stop them in order.
            process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT if log else None,
                stdin=subprocess.DEVNULL, env=env, cwd=cwd, start_new_session=True)
        self.processes[name] = process
        return process

    def log(self, name: str) -> Path | None:
        return self.log_dir / f"{name}.log" if self.log_dir else None

    def dead(self) -> list[str]:
        return [name for name, p in self.processes.items() if p.poll() is not None]

    def stop(self, name: str, timeout: float = 20) -> None:
        """SIGTERM, SIGKILL after ``timeout``; then anything left of its process tree."""
        process = self.processes.pop(name)
        try:
            tree = psutil.Process(process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            tree = []
        stop_process(process, timeout)
        for child in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
