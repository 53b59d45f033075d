"""Real node agents as subprocesses on 127.0.0.1, and their cleanup."""

from __future__ import annotations

import json
import os
import random
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from daskplatform.node.confine import group_name
from daskplatform.settings import PortSettings, RuntimeSettings
from tests.conftest import free_port

START_TIMEOUT_S = 30


def settings_file(directory: Path) -> Path:
    """Runtime settings with port ranges of their own, away from other test areas."""
    base = random.randrange(30000, 60000, 400)
    settings = RuntimeSettings(ports=PortSettings(scheduler_range=(base, base + 99),
                                                  worker_range=(base + 100, base + 299)))
    path = directory / "settings.json"
    path.write_text(settings.to_json(), encoding="utf-8")
    return path


class Agent:
    """One ``dask-platform agent`` process."""

    def __init__(self, directory: Path, role: str, *, cores: float = 2, memory_gb: float = 4,
                 extra: tuple[str, ...] = (), scheme: str = "http",
                 settings: Path | None = None) -> None:
        self.directory = directory
        self.role = role
        self.token = secrets.token_hex(16)
        self.port = free_port()
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.node_id = f"test-{role}-{secrets.token_hex(4)}"
        self.workdir = directory / self.node_id
        directory.mkdir(parents=True, exist_ok=True)
        token_file = directory / f"{self.node_id}.token"
        token_file.write_text(self.token, encoding="utf-8")
        self.argv = [
            sys.executable, "-m", "daskplatform.cli", "agent", "--role", role,
            "--settings", str(settings or settings_file(directory)),
            "--port", str(self.port), "--token-file", str(token_file),
            "--cores", str(cores), "--memory-gb", str(memory_gb),
            "--workdir", str(self.workdir), "--node-id", self.node_id, *extra,
        ]
        self.process: subprocess.Popen[bytes] | None = None
        self.verify: str | bool = True

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def start(self) -> Agent:
        log = open(self.directory / f"{self.node_id}.agent.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"agent exited with {self.process.returncode}: "
                                   + self.agent_log())
            try:
                requests.get(self.url + "/v1/health", timeout=1, verify=self.verify)
                return self
            except requests.ConnectionError:
                time.sleep(0.1)
        raise TimeoutError("agent did not answer /v1/health: " + self.agent_log())

    def agent_log(self) -> str:
        return (self.directory / f"{self.node_id}.agent.log").read_text(errors="replace")

    def terminate(self) -> None:
        """Stop the agent only (its Dask processes keep running, by design)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(15)

    def live_pids(self) -> list[int]:
        state = self.workdir / "state.json"
        if not state.exists():
            return []
        records = json.loads(state.read_text())["records"]
        return [r["pid"] for r in records
                if r["state"] in ("starting", "running") and r["pid"] is not None]

    def close(self) -> None:
        """Stop every Dask process, then the agent; kill anything left over."""
        if self.process is not None and self.process.poll() is None:
            try:
                listing = requests.get(self.url + "/v1/processes", headers=self.headers,
                                       timeout=5, verify=self.verify).json()["processes"]
                for proc in listing:
                    if proc["state"] in ("starting", "running"):
                        requests.delete(f"{self.url}/v1/processes/{proc['id']}",
                                        params={"grace": "3"}, headers=self.headers,
                                        timeout=30, verify=self.verify)
            except requests.RequestException:
                pass
        self.terminate()
        for pid in self.live_pids():
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for group in cgroup_dirs(self.node_id, self.workdir):
            for child in group.iterdir():
                if child.is_dir():
                    _rmdir(child)
            _rmdir(group)


def cgroup_dirs(node_id: str, workdir: Path) -> list[Path]:
    """This agent's cgroup v1 directories (the agent removes them when it can)."""
    name = group_name(node_id, workdir)
    return list(Path("/sys/fs/cgroup").glob(f"**/dask-platform/{name}"))


def _rmdir(path: Path) -> None:
    for _ in range(50):
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.02)
