"""``dask-platform local`` as a user runs it: a child process that prints a ready line,
serves clusters to the demo users, and on SIGTERM stops everything it started."""

from __future__ import annotations

import asyncio
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from dask_gateway import BasicAuth, Gateway

from daskplatform import local
from daskplatform.settings import load_stack_file
from tests.conftest import free_port
from tests.identity.conftest import hub_login

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 120.0


class LocalRun:
    """The child process and its output, read line by line in a thread."""

    def __init__(self, *args: str) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "daskplatform.cli", "local", "--port", str(self.port),
             "--workers", "2", *args],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, prefix: str, timeout: float = READY_TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.process.poll() is not None and self.lines.empty():
                    break
                continue
            self.output.append(line)
            if line.startswith(prefix):
                return line
        raise AssertionError(f"no line starting {prefix!r}; output:\n" + "\n".join(self.output))

    def rest(self, timeout: float = 60) -> str:
        self.process.wait(timeout)
        time.sleep(0.2)  # let the reader drain the pipe
        while not self.lines.empty():
            self.output.append(self.lines.get())
        return "\n".join(self.output)

    def tree(self) -> tuple[list[psutil.Process], set[int]]:
        """Every process below the child, and every port they listen on."""
        processes = [psutil.Process(self.process.pid),
                     *psutil.Process(self.process.pid).children(recursive=True)]
        ports = set()
        for proc in processes:
            try:
                ports |= {c.laddr.port for c in proc.net_connections("tcp")
                          if c.status == psutil.CONN_LISTEN}
            except psutil.NoSuchProcess:
                pass
        return processes, ports

    def kill(self) -> None:
        if self.process.poll() is None:
            for proc in self.tree()[0][::-1]:
                try:
                    proc.kill()
                except psutil.NoSuchProcess:
                    pass  # ended on its own meanwhile
            self.process.wait()


@pytest.fixture
def run_local() -> Iterator[list[LocalRun]]:
    runs: list[LocalRun] = []
    yield runs
    for run in runs:  # only if a test failed half-way
        run.kill()


def in_range(port: int, bounds: tuple[int, int]) -> bool:
    return bounds[0] <= port <= bounds[1]


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def assert_all_gone(processes: list[psutil.Process], ports: set[int]) -> None:
    alive = [p for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"left running: {[p.cmdline() for p in alive]}"
    assert not [p for p in ports if listening(p)]


def test_serves_engineer1_and_stops_cleanly_on_sigterm(run_local: list[LocalRun]) -> None:
    run = LocalRun()
    run_local.append(run)
    assert run.wait_for("ready: ") == f"ready: http://127.0.0.1:{run.port}"
    address = f"http://127.0.0.1:{run.port}"

    async def compute() -> tuple[int, int, list[psutil.Process], set[int]]:
        """Leaves the cluster running, so SIGTERM has Dask processes to stop."""
        async with Gateway(address, auth=BasicAuth("engineer1", "engineer1-demo"),
                           asynchronous=True) as gateway, \
                gateway.new_cluster(shutdown_on_close=False) as cluster:
            await cluster.scale(2)
            async with cluster.get_client(set_as_default=False) as client:
                await client.wait_for_workers(2, timeout=90)
                workers = client.scheduler_info()["workers"].values()
                total = await client.submit(sum, range(101))
                return total, len(workers), *run.tree()

    total, workers, processes, ports = asyncio.run(compute())
    assert total == 5050 and workers == 2
    names = [" ".join(p.cmdline()) for p in processes]
    assert sum("slapd" in n for n in names) == 1
    assert sum("daskplatform.cli agent" in n for n in names) == 3
    assert sum("daskplatform.cli gateway" in n for n in names) == 1
    assert run.port in ports
    # The running cluster's Dask processes are among what must be gone after SIGTERM.
    stack_ports = load_stack_file(str(REPO / "Pulumi.dev.yaml")).ports
    assert any(in_range(port, stack_ports.scheduler_range) for port in ports)
    assert sum(in_range(port, stack_ports.worker_range) for port in ports) >= 2

    run.process.send_signal(signal.SIGTERM)
    output = run.rest()
    assert run.process.returncode == 0, output
    assert "local: stopped" in output
    assert_all_gone(processes, ports)


def test_demo_once_shows_quotas_a_computation_and_a_refusal(run_local: list[LocalRun]) -> None:
    run = LocalRun("--demo", "--once")
    run_local.append(run)
    run.wait_for("ready: ")
    processes, ports = run.tree()
    output = run.rest(timeout=READY_TIMEOUT)
    assert run.process.returncode == 0, output
    assert "engineer1: each cluster up to 4 worker cores and 8 GB" in output
    assert "analyst1: each cluster up to 2 worker cores and 4 GB" in output
    assert "sum(range(1_000_001)) = 500000500000" in output
    assert "exceed resource limit of 2 workers" in output
    assert "outsider1 (in no platform group) is refused: HTTP 403" in output
    assert_all_gone(processes, ports)


def test_hub_mode_logs_users_in_through_ldap_and_stops_cleanly(
        run_local: list[LocalRun]) -> None:
    hub_port = free_port()
    run = LocalRun("--hub", "--hub-port", str(hub_port))
    run_local.append(run)
    hub = f"http://127.0.0.1:{hub_port}"
    # The gateway host's own mode: clients reach the gateway through the hub.
    assert run.wait_for("ready: ") == f"ready: {hub}/services/dask-gateway"
    assert asyncio.run(hub_login(hub, "engineer1", "engineer1-demo"))[0] == 302
    assert asyncio.run(hub_login(hub, "outsider1", "outsider1-demo"))[0] == 403

    async def worker_cores_max() -> float:
        async with Gateway(f"{hub}/services/dask-gateway", asynchronous=True,
                           proxy_address=f"gateway://127.0.0.1:{run.port}",
                           auth=BasicAuth("analyst1", "analyst1-demo")) as gateway:
            return (await gateway.cluster_options())._fields["worker_cores"].max

    assert asyncio.run(worker_cores_max()) == 2
    processes, ports = run.tree()
    assert {run.port, hub_port} <= ports

    run.process.send_signal(signal.SIGTERM)
    output = run.rest()
    assert run.process.returncode == 0, output
    assert_all_gone(processes, ports)


def test_missing_slapd_says_what_to_install(monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(REPO)
    monkeypatch.setattr("daskplatform.identity.slapd.shutil.which", lambda *a, **k: None)
    code = local.main(["--port", str(free_port()), "--once"])
    assert code == 1
    assert "sudo apt-get install slapd ldap-utils" in capsys.readouterr().err


@pytest.mark.parametrize("args,message", [
    (["--workers", "0"], "--workers must be between 1 and 16"),
    (["--stack", "no-such.yaml"], "--stack no-such.yaml: no such file"),
])
def test_bad_options_are_named(args: list[str], message: str,
                               capsys: pytest.CaptureFixture[str],
                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    assert local.main(["--port", str(free_port()), *args]) == 2
    assert message in capsys.readouterr().err


def test_a_busy_port_is_named(capsys: pytest.CaptureFixture[str],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert local.main(["--port", str(port)]) == 2
    assert f"--port {port}: 127.0.0.1:{port} is in use" in capsys.readouterr().err
