"""Confinement, the cold path, fork-server failure, agent restart and TLS, each with a
real agent process of its own."""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from daskplatform.node.client import NodeAgentClient, NodeUnreachable
from daskplatform.node.confine import CFS_PERIOD_US
from tests.node.harness import Agent
from tests.node.test_agent import SCHEDULER_ARGV, alive, client_for, cmdline, spec, wait_state

HOG = """
def dask_setup(scheduler):
    import os
    chunks = []
    for _ in range(64):  # 1 GiB at most: bounded even if no limit applies
        chunks.append(bytearray(16 << 20))
    os._exit(3)
"""


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[list[Agent]]:
    """Agents a test starts itself; all closed afterwards."""
    started: list[Agent] = []
    yield started
    for agent in started:
        agent.close()


def cgroup_file(pid: int, controller: str, name: str) -> str:
    """Read a cgroup v1 control file of the group ``pid`` is in."""
    with open(f"/proc/{pid}/cgroup") as fh:
        for line in fh:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if controller in controllers.split(","):
                mount = Path("/sys/fs/cgroup") / controller
                return (mount / path.lstrip("/") / name).read_text().strip()
    raise AssertionError(f"{pid} has no {controller} cgroup")


async def test_process_sits_in_its_cgroups_with_its_limits(scheduler_agent: Agent) -> None:
    async with client_for(scheduler_agent) as client:
        mode = (await client.capacity())["confinement"]
        if mode == "nanny":
            pytest.skip("no writable cgroups on this machine: nanny limits only")
        assert mode == "cgroup-v1", "these checks read cgroup v1 files"
        proc = await client.spawn(spec("scheduler", SCHEDULER_ARGV, cores=0.5, memory_gb=0.75))
        await wait_state(client, proc["id"], {"running"})
        pid = proc["pid"]
        assert int(cgroup_file(pid, "cpu", "cpu.cfs_quota_us")) == CFS_PERIOD_US // 2
        assert int(cgroup_file(pid, "cpu", "cpu.cfs_period_us")) == CFS_PERIOD_US
        assert int(cgroup_file(pid, "memory", "memory.limit_in_bytes")) == int(0.75 * 2**30)
        assert str(pid) in cgroup_file(pid, "memory", "cgroup.procs").split()
        assert proc["id"] in Path(f"/proc/{pid}/cgroup").read_text()
        await client.stop(proc["id"], grace=5)


async def test_memory_hog_is_killed_by_its_limit(scheduler_agent: Agent) -> None:
    async with client_for(scheduler_agent) as client:
        if (await client.capacity())["confinement"] == "nanny":
            pytest.skip("no writable cgroups on this machine: nanny limits only")
        proc = await client.spawn(spec("scheduler", [*SCHEDULER_ARGV, "--preload", "hog.py"],
                                       memory_gb=0.25, files={"hog.py": HOG}))
        ended = await wait_state(client, proc["id"], {"stopped", "failed"}, timeout=60)
    # Exit 3 would mean it allocated 1 GiB: the 0.25 GiB limit did not hold.
    assert (ended["state"], ended["exit_code"]) == ("failed", -signal.SIGKILL)


async def test_cold_agent_spawns_fresh_interpreters(agents: list[Agent], tmp_path: Path) -> None:
    agents.append(agent := Agent(tmp_path, "scheduler", extra=("--cold",)).start())
    async with client_for(agent) as client:
        assert (await client.capacity())["warm"] is False
        proc = await client.spawn(spec("scheduler", SCHEDULER_ARGV))
        running = await wait_state(client, proc["id"], {"running"})
        assert running["warm"] is False
        assert "daskplatform.node.launch" in cmdline(proc["pid"])
        assert (await client.stop(proc["id"], grace=5))["state"] == "stopped"


async def test_dead_fork_server_means_cold_spawn_then_restart(
        agents: list[Agent], tmp_path: Path) -> None:
    agents.append(agent := Agent(tmp_path, "scheduler").start())
    async with client_for(agent) as client:
        first_server = (await client.capacity())["fork_server_pid"]
        os.kill(first_server, signal.SIGKILL)
        cold = await client.spawn(spec("scheduler", SCHEDULER_ARGV, cores=0.5))
        assert cold["warm"] is False
        await wait_state(client, cold["id"], {"running"})
        async with asyncio.timeout(30):
            while not (cap := await client.capacity())["warm"]:
                await asyncio.sleep(0.1)
        assert cap["fork_server_pid"] not in (None, first_server)
        warm = await client.spawn(spec("scheduler", SCHEDULER_ARGV, cores=0.5))
        assert warm["warm"] is True
        for proc in (cold, warm):
            await client.stop(proc["id"], grace=5)


async def test_processes_survive_an_agent_restart_and_are_readopted(
        agents: list[Agent], tmp_path: Path) -> None:
    agents.append(agent := Agent(tmp_path, "scheduler").start())
    async with client_for(agent) as client:
        keeps = await client.spawn(spec("scheduler", SCHEDULER_ARGV, cores=0.5))
        dies = await client.spawn(spec("scheduler", SCHEDULER_ARGV, cores=0.5))
        await wait_state(client, keeps["id"], {"running"})
    agent.terminate()
    assert alive(keeps["pid"]) and alive(dies["pid"])
    os.killpg(dies["pid"], signal.SIGKILL)  # ends while no agent watches
    agent.start()
    async with client_for(agent) as client:
        readopted = await client.get(keeps["id"])
        assert (readopted["state"], readopted["pid"]) == ("running", keeps["pid"])
        lost = await client.get(dies["id"])
        assert lost["state"] == "failed" and lost["exit_code"] is None
        assert (await client.capacity())["used_cores"] == 0.5
        stopped = await client.stop(keeps["id"], grace=5)
        assert stopped["state"] == "stopped"
    assert not alive(keeps["pid"])


@pytest.fixture
def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "agent.crt", tmp_path / "agent.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


async def test_tls_agent(agents: list[Agent], tmp_path: Path,
                         self_signed: tuple[Path, Path]) -> None:
    cert, key = self_signed
    agent = Agent(tmp_path, "worker", scheme="https",
                  extra=("--tls-cert", str(cert), "--tls-key", str(key)))
    agent.verify = str(cert)
    agents.append(agent.start())
    trusted = ssl.create_default_context(cafile=str(cert))
    async with NodeAgentClient(agent.url, agent.token, ssl=trusted) as client:
        assert (await client.capacity())["role"] == "worker"
    async with NodeAgentClient(agent.url, agent.token, timeout=5) as untrusted:
        with pytest.raises(NodeUnreachable):
            await untrusted.capacity()
    plain = agent.url.replace("https://", "http://")
    async with NodeAgentClient(plain, agent.token, timeout=5) as client:
        with pytest.raises(NodeUnreachable):
            await client.capacity()
