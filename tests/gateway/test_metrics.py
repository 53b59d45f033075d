"""QueuedTasks and per-worker memory from a live scheduler's Prometheus page: the parser
and the scrape round, checked against the scheduler's own task states and a worker's
data."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import aiohttp
import pytest
from distributed import Client, Scheduler, Worker

from daskplatform.gateway.metrics import (
    queued_tasks,
    read_page,
    read_schedulers,
    worker_memory,
)
from tests.conftest import free_port

PLAIN_TASKS = 7
"""Root tasks with no worker to run them: the scheduler queues them."""
RESTRICTED_TASKS = 3
"""Tasks asking for a resource no worker has: ``no-worker``."""
LOG = logging.getLogger(__name__)
PRELOAD = "daskplatform.gateway.worker_memory"
"""What the pool backend preloads into every scheduler for per-worker memory."""
HELD = 16 << 20
"""Bytes of task results a worker holds."""


@pytest.fixture
async def busy_scheduler() -> AsyncIterator[tuple[Scheduler, str]]:
    """A scheduler on 127.0.0.1 without workers, holding both kinds of waiting task;
    yields it and its dashboard address as dask-gateway records it."""
    async with Scheduler(host="127.0.0.1", port=0, dashboard_address="127.0.0.1:0",
                         preload=[PRELOAD]) as s, \
            Client(s.address, asynchronous=True) as client:
        futures = [*client.map(abs, range(PLAIN_TASKS), pure=False),
                   *client.map(abs, range(RESTRICTED_TASKS), pure=False,
                               resources={"GPU": 1})]
        for _ in range(100):
            if len(s.queued) + len(s.unrunnable) == len(futures):
                break
            await asyncio.sleep(0.05)
        yield s, f"http://127.0.0.1:{s.http_server.port}"
        await client.cancel(futures)


async def test_queued_tasks_counts_the_schedulers_queued_and_no_worker_tasks(
        busy_scheduler: tuple[Scheduler, str]) -> None:
    scheduler, dashboard = busy_scheduler
    # Both states are present, so a parser that read only one of them would fail.
    assert (len(scheduler.queued), len(scheduler.unrunnable)) == (PLAIN_TASKS,
                                                                  RESTRICTED_TASKS)
    async with aiohttp.ClientSession() as session, \
            session.get(f"{dashboard}/metrics") as response:
        page = await response.text()
    assert read_page(page, "c1").queued_tasks == PLAIN_TASKS + RESTRICTED_TASKS


def test_a_page_without_the_task_gauge_is_an_error_not_zero() -> None:
    with pytest.raises(ValueError, match="no dask_scheduler_tasks gauge"):
        read_page("# HELP up Whether the target is up.\n# TYPE up gauge\nup 1.0\n", "c1")


async def _memory_page(preload: list[str]) -> str:
    """A scheduler's page once its worker has reported holding HELD bytes."""
    async with Scheduler(host="127.0.0.1", port=0, dashboard_address="127.0.0.1:0",
                         preload=preload) as s, \
            Worker(s.address, name="w-1", memory_limit="1GiB"), \
            Client(s.address, asynchronous=True) as client:
        held = client.submit(bytes, HELD, pure=False)
        await held
        url = f"http://127.0.0.1:{s.http_server.port}/metrics"
        async with aiohttp.ClientSession() as session:
            for _ in range(100):
                (worker,) = s.workers.values()
                if worker.metrics["managed_bytes"] >= HELD:
                    async with session.get(url) as response:
                        return await response.text()
                await asyncio.sleep(0.1)
    raise AssertionError("the worker never reported its data")


async def test_each_workers_memory_is_on_the_page_split_as_dask_splits_it() -> None:
    (worker,) = read_page(await _memory_page([PRELOAD]), "c1").workers
    assert (worker.cluster, worker.worker, worker.spilled) == ("c1", "w-1", 0)
    # The interpreter and its modules are unmanaged; the held bytes are managed.
    assert worker.managed >= HELD and worker.unmanaged > 0
    # Its limit, so the gateway publishes how full it is (WorkerMemoryUsedPercent).
    assert worker.limit == 1 << 30
    assert worker.used_percent == 100 * (worker.managed + worker.unmanaged) / (1 << 30)


async def test_a_scheduler_without_the_preload_lists_no_workers() -> None:
    assert read_page(await _memory_page([]), "c1").workers == ()


async def test_a_scrape_round_skips_schedulers_that_do_not_answer(
        busy_scheduler: tuple[Scheduler, str], caplog: pytest.LogCaptureFixture) -> None:
    _, dashboard = busy_scheduler
    gone = f"http://127.0.0.1:{free_port()}"
    async with aiohttp.ClientSession() as session:
        both = await read_schedulers(session, {"up": dashboard, "gone": gone}, 2, LOG)
        assert queued_tasks(both) == PLAIN_TASKS + RESTRICTED_TASKS
        assert gone in caplog.text
        none = await read_schedulers(session, {"gone": gone}, 2, LOG)
        assert queued_tasks(none) is None and worker_memory(none) == ()
        assert queued_tasks(await read_schedulers(session, {}, 2, LOG)) == 0

