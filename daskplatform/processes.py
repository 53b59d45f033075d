"""Stopping the child processes the runtime starts (slapd, the gateway, JupyterHub...)."""

from __future__ import annotations

import subprocess


def stop_process(process: subprocess.Popen, timeout: float) -> None:
    """SIGTERM so it can shut down cleanly, SIGKILL if it has not after ``timeout``;
    returns once it is gone. A process that already ended is left as it is."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
