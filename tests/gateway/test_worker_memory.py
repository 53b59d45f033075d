"""Dask's memory management under the agent's cgroup limit, with real workers started by
real node agents in the environment the pool backend gives them (``dask_config``):
data beyond the target spill to the worker's directory on local disk and the work
completes, where the same work without spilling is killed by the cgroup; and a task
that keeps allocating gets its worker restarted by the nanny before the kernel's OOM
killer acts. Figures are printed (``pytest -s``): bytes spilled, peak RSS, limit."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import cloudpickle
import pytest
from distributed import Client, KilledWorker, wait

from daskplatform.gateway.dask_config import (
    dask_config,
    dask_env,
    max_spill_config,
    spill_disk_per_memory,
)
from daskplatform.gateway.metrics import WorkerMemory, read_schedulers, worker_memory
from daskplatform.gateway.quotas import GIB
from daskplatform.settings import ClusterSettings, RuntimeSettings, terminate_headroom_problems
from tests.node.harness import Agent
from tests.node.test_agent import SCHEDULER_ARGV, client_for, wait_state, worker_argv

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Dask processes lack tests/

MIB = 1 << 20
WORKER_GB = 0.5
"""The worker's memory: its cgroup limit and Dask's memory limit (512 MiB)."""
LIMIT = int(WORKER_GB * GIB)
SETTINGS = RuntimeSettings(clusters=ClusterSettings(
    worker_memory_gb=WORKER_GB, worker_memory_target=0.5, worker_memory_spill=0.6,
    worker_memory_pause=0.7, worker_memory_terminate=0.8))
"""A valid platform config for a 0.5 GB default worker: terminate 0.8 leaves the 0.1 GB
TERMINATE_HEADROOM_GB asks for (Dask's 0.95 would leave 26 MB)."""
BLOCKS, BLOCK_MIB = 16, 40
"""640 MiB of task results: more than the worker's whole limit."""
UNMANAGED = {"target": False, "spill": False, "pause": False, "terminate": False}
"""Dask's memory management switched off: the cgroup is the only limit left."""
LOG = logging.getLogger(__name__)


@pytest.fixture(scope="module")
def agents(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Agent]]:
    """A scheduler node, a worker node, and a worker node that starts processes cold."""
    directory = tmp_path_factory.mktemp("memory")
    started = {"scheduler": Agent(directory, "scheduler").start(),
               "warm": Agent(directory, "worker").start(),
               "cold": Agent(directory, "worker", extra=("--cold",)).start()}
    yield started
    for agent in started.values():
        agent.close()


@dataclass
class Pair:
    """A scheduler and one worker, both started through their agents."""

    client: Client
    dashboard: str
    worker: dict[str, Any]
    """The worker's agent record (its pid is the nanny's)."""
    worker_agent: Agent

    def cgroup(self, name: str) -> str:
        """A cgroup v1 memory file of the worker's group (nanny and worker)."""
        with open(f"/proc/{self.worker['pid']}/cgroup") as fh:
            path = next(line.rstrip("\n").split(":", 2)[2] for line in fh
                        if "memory" in line.split(":", 2)[1].split(","))
        return (Path("/sys/fs/cgroup/memory") / path.lstrip("/") / name).read_text()

    def oom_kills(self) -> int:
        fields = dict(line.split() for line in self.cgroup("memory.oom_control").splitlines())
        return int(fields["oom_kill"])

    def peak_usage(self) -> int:
        return int(self.cgroup("memory.max_usage_in_bytes"))

    def directory(self) -> Path:
        return self.worker_agent.workdir / "procs" / self.worker["id"]

    async def log(self) -> str:
        async with client_for(self.worker_agent) as agent:
            return await agent.log(self.worker["id"], lines=2000)


def platform_env(memory: dict[str, Any] | None = None) -> dict[str, str]:
    """What the pool backend gives a worker of WORKER_GB (``get_worker_env``'s Dask part),
    with ``memory`` overriding distributed.worker.memory."""
    config = dask_config(SETTINGS.clusters)
    config["distributed"]["worker"]["memory"].update(memory or {})
    cap = int(spill_disk_per_memory(SETTINGS) * LIMIT)
    return {**dask_env(config), **dask_env(max_spill_config(cap))}


@asynccontextmanager
async def dask_pair(agents: dict[str, Agent], env: dict[str, str],
                    start: str = "warm") -> AsyncIterator[Pair]:
    scheduler_agent, worker_agent = agents["scheduler"], agents[start]
    async with client_for(scheduler_agent) as sched, client_for(worker_agent) as work:
        scheduler = await sched.spawn({
            "id": f"s-{os.urandom(4).hex()}", "kind": "scheduler", "env": env,
            "argv": [*SCHEDULER_ARGV, "--preload", "daskplatform.gateway.worker_memory"],
            "cores": 1, "memory_gb": 1})
        address = f"tcp://127.0.0.1:{scheduler['ports'][0]}"
        # 1.5 cores: the agent gives whole cores as threads (one), not round(1.5) = 2.
        worker = await work.spawn({"id": f"w-{os.urandom(4).hex()}", "kind": "worker",
                                   "argv": worker_argv(address), "env": env, "cores": 1.5,
                                   "memory_gb": WORKER_GB})
        try:
            await wait_state(sched, scheduler["id"], {"running"})
            async with Client(address, asynchronous=True, timeout=30) as client:
                await client.wait_for_workers(1, timeout=30)
                yield Pair(client, f"http://127.0.0.1:{scheduler['ports'][1]}", worker,
                           worker_agent)
        finally:
            await work.stop(worker["id"], grace=5)
            await sched.stop(scheduler["id"], grace=5)


def block(index: int) -> Any:
    import numpy as np

    return np.full(BLOCK_MIB * MIB // 8, index, dtype=np.int64)


def block_sum(array: Any) -> int:
    return int(array.sum())


def peak_rss() -> int:
    """This process's high-water RSS (VmHWM), in bytes."""
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmHWM:"))


async def needs_cgroup_v1(agent: Agent) -> None:
    async with client_for(agent) as client:
        if (await client.capacity())["confinement"] != "cgroup-v1":
            pytest.skip("these checks read cgroup v1 files; this machine's agent has none")


def spill_file_bytes(directory: Path) -> int:
    """Bytes in Dask's spill files (``.../dask-scratch-space/worker-*/storage/``)."""
    return sum(p.stat().st_size for p in directory.rglob("*")
               if p.is_file() and "storage" in p.parts)


async def spilled_figures(pair: Pair, at_least: float) -> WorkerMemory:
    """The worker's memory as the gateway reads it from the scheduler's page, once the
    worker's heartbeats report ``at_least`` bytes spilled."""
    async with aiohttp.ClientSession() as session:
        for _ in range(100):
            readings = await read_schedulers(session, {"c": pair.dashboard}, 5, LOG)
            (figures,) = worker_memory(readings)
            if figures.spilled >= at_least:
                return figures
            await asyncio.sleep(0.1)
    raise AssertionError(f"the scheduler never reported {at_least:.0f} bytes spilled: "
                         f"{figures}")


async def test_data_beyond_the_target_spill_to_local_disk_and_the_work_completes(
        agents: dict[str, Agent]) -> None:
    await needs_cgroup_v1(agents["warm"])
    assert terminate_headroom_problems(SETTINGS.clusters) == []
    async with dask_pair(agents, platform_env()) as pair:
        client = pair.client
        assert list((await client.nthreads()).values()) == [1]
        blocks = client.map(block, range(BLOCKS))
        await wait(blocks, timeout=60)
        # At most the target (256 MiB) of the 640 MiB stays in memory; the rest goes to
        # disk, in the worker's directory under the agent's workdir.
        figures = await spilled_figures(pair, BLOCKS * BLOCK_MIB * MIB - 0.5 * LIMIT)
        on_disk = spill_file_bytes(pair.directory())
        (hwm,) = (await client.run(peak_rss)).values()
        total = await client.submit(sum, client.map(block_sum, blocks))
        oom_kills, peak_usage = pair.oom_kills(), pair.peak_usage()

    assert total == sum(i * (BLOCK_MIB * MIB // 8) for i in range(BLOCKS))
    assert on_disk >= figures.spilled
    assert hwm < LIMIT and oom_kills == 0
    print(f"\nspill: {figures.spilled / MIB:.0f} MiB spilled of {BLOCKS * BLOCK_MIB} MiB held; "
          f"worker peak RSS {hwm / MIB:.0f} MiB against a {LIMIT / MIB:.0f} MiB limit; "
          f"cgroup peak (with page cache) {peak_usage / MIB:.0f} MiB; OOM kills {oom_kills}")


async def test_the_same_work_without_spilling_is_killed_by_the_cgroup(
        agents: dict[str, Agent]) -> None:
    await needs_cgroup_v1(agents["warm"])
    async with dask_pair(agents, platform_env(UNMANAGED)) as pair:
        blocks = pair.client.map(block, range(BLOCKS))
        for _ in range(300):  # the kernel counts the kill before the nanny logs it
            oom_kills, log = pair.oom_kills(), await pair.log()
            if oom_kills and "was killed by signal 9" in log:
                break
            await asyncio.sleep(0.1)
        await pair.client.cancel(blocks)
    assert oom_kills >= 1
    assert "was killed by signal 9" in log
    print(f"\nno spill: the kernel's OOM killer killed the worker ({oom_kills} time(s))")


def allocate_steadily() -> int:
    """About 400 MB/s, in 4 MiB steps, up to 1.5 GiB: a task whose unmanaged memory
    grows until something stops it."""
    chunks = []
    for _ in range(384):
        chunks.append(bytearray(4 * MIB))
        time.sleep(0.01)
    return len(chunks)


@pytest.mark.parametrize("start", ["warm", "cold"])
async def test_the_nanny_restarts_a_growing_worker_before_the_cgroup_limit(
        agents: dict[str, Agent], start: str) -> None:
    """Cold, the nanny's own memory (~60 MB) is charged to the worker's cgroup: there
    Dask's 0.95 lets the kernel kill the worker; forked warm, it is charged to the fork
    server's."""
    await needs_cgroup_v1(agents[start])
    async with dask_pair(agents, platform_env(), start) as pair:
        with pytest.raises(KilledWorker):
            await pair.client.submit(allocate_steadily, pure=False)
        restarts = [event for _, event in
                    await pair.client.get_events("worker-restart-memory")]
        oom_kills, peak_usage, log = pair.oom_kills(), pair.peak_usage(), await pair.log()

    attempts = SETTINGS.clusters.scheduler_allowed_failures + 1
    terminate = SETTINGS.clusters.worker_memory_terminate
    assert len(restarts) == attempts  # every attempt ended by the nanny ...
    assert log.count(f"exceeded {terminate:.0%} memory budget. Restarting") == attempts
    assert oom_kills == 0  # ... none by the kernel (the nanny SIGKILLs a slow SIGTERM)
    assert peak_usage < LIMIT  # the cgroup never even reached its limit
    rss = max(event["rss"] for event in restarts)
    print(f"\nterminate ({start}): the nanny restarted the worker {attempts} times at RSS up to "
          f"{rss / MIB:.0f} MiB (threshold {terminate * LIMIT / MIB:.0f} MiB); cgroup peak "
          f"{peak_usage / MIB:.0f} MiB of its {LIMIT / MIB:.0f} MiB limit; OOM kills 0")
