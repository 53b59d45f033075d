"""Warm fork vs cold interpreter: how fast a node agent starts Dask processes.

Times, per repetition, POST -> scheduler accepting TCP connections, and POST -> worker
(with its nanny) registered at that scheduler, for an agent with its fork server and
one started with ``--cold``. Prints p50/p95 of each and the cold/warm ratio.

    python -m bench.agent_spawn [--repetitions 10] [--nanny-method spawn]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import tempfile
import time
from pathlib import Path

from distributed import Client

from daskplatform.node.client import NodeAgentClient
from tests.node.harness import Agent, settings_file


async def _accepting(port: int) -> None:
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.005)


async def _once(sched: NodeAgentClient, work: NodeAgentClient,
                worker_env: dict[str, str]) -> tuple[float, float]:
    tag = secrets.token_hex(4)
    start = time.perf_counter()
    s = await sched.spawn({"id": f"s-{tag}", "kind": "scheduler", "cores": 1, "memory_gb": 1,
                           "argv": ["--host", "{host}", "--port", "{port0}",
                                    "--dashboard-address", "{host}:{port1}"]})
    await asyncio.wait_for(_accepting(s["ports"][0]), 60)
    scheduler_s = time.perf_counter() - start
    address = f"tcp://127.0.0.1:{s['ports'][0]}"
    async with Client(address, asynchronous=True) as client:
        start = time.perf_counter()
        w = await work.spawn({"id": f"w-{tag}", "kind": "worker", "cores": 1, "memory_gb": 1,
                              "env": worker_env,
                              "argv": [address, "--host", "{host}", "--worker-port", "{port0}",
                                       "--nanny-port", "{port1}", "--dashboard-address",
                                       "{host}:{port2}"]})
        await client.wait_for_workers(1, timeout=60)
        worker_s = time.perf_counter() - start
    await work.stop(w["id"], grace=5)
    await sched.stop(s["id"], grace=5)
    return scheduler_s, worker_s


def _p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 \
        else values[0]


async def _measure(directory: Path, cold: bool, repetitions: int,
                   worker_env: dict[str, str]) -> dict[str, list[float]]:
    directory.mkdir(parents=True)
    extra = ("--cold",) if cold else ()
    settings = settings_file(directory)
    agents = [Agent(directory, role, extra=extra, settings=settings).start()
              for role in ("scheduler", "worker")]
    try:
        sched, work = (NodeAgentClient(a.url, a.token, timeout=60) for a in agents)
        times: dict[str, list[float]] = {"scheduler": [], "worker": []}
        async with sched, work:
            await _once(sched, work, worker_env)  # first run pays one-off page-ins: not counted
            for _ in range(repetitions):
                scheduler_s, worker_s = await _once(sched, work, worker_env)
                times["scheduler"].append(scheduler_s)
                times["worker"].append(worker_s)
        return times
    finally:
        for agent in agents:
            agent.close()


async def run(repetitions: int, nanny_method: str | None) -> None:
    worker_env = ({"DASK_DISTRIBUTED__WORKER__MULTIPROCESSING_METHOD": nanny_method}
                  if nanny_method else {})
    with tempfile.TemporaryDirectory() as tmp:
        warm = await _measure(Path(tmp) / "warm", False, repetitions, worker_env)
        cold = await _measure(Path(tmp) / "cold", True, repetitions, worker_env)
    print(f"{repetitions} repetitions, seconds from POST")
    print(f"{'':28}{'warm p50':>9}{'warm p95':>9}{'cold p50':>9}{'cold p95':>9}"
          f"{'cold/warm p50':>15}")
    for what, label in (("scheduler", "scheduler accepting"),
                        ("worker", "worker+nanny registered")):
        w50, w95 = _p(warm[what], 50), _p(warm[what], 95)
        c50, c95 = _p(cold[what], 50), _p(cold[what], 95)
        print(f"{label:28}{w50:9.3f}{w95:9.3f}{c50:9.3f}{c95:9.3f}{c50 / w50:15.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repetitions", type=int, default=10)
    parser.add_argument("--nanny-method", choices=("fork", "spawn", "forkserver"),
                        help="how nannies start their worker (default: the agent's choice, "
                        "fork when warm, spawn when cold)")
    args = parser.parse_args()
    asyncio.run(run(args.repetitions, args.nanny_method))


if __name__ == "__main__":
    main()
