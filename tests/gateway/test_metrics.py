"""QueuedTasks from a live scheduler's Prometheus page: the parser and the scrape round,
checked against the scheduler's own task states."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import aiohttp
import pytest
from distributed import Client, Scheduler

from daskplatform.gateway.metrics import queued_tasks, scrape_queued_tasks
from tests.conftest import free_port

PLAIN_TASKS = 7
"""Root tasks with no worker to run them: the scheduler queues them."""
RESTRICTED_TASKS = 3
"""Tasks asking for a resource no worker has: ``no-worker``."""
LOG = logging.getLogger(__name__)


@pytest.fixture
async def busy_scheduler() -> AsyncIterator[tuple[Scheduler, str]]:
    """A scheduler on 127.0.0.1 without workers, holding both kinds of waiting task;
    yields it and its dashboard address as dask-gateway records it."""
    async with Scheduler(host="127.0.0.1", port=0, dashboard_address="127.0.0.1:0") as s, \
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
    assert queued_tasks(page) == PLAIN_TASKS + RESTRICTED_TASKS


def test_a_page_without_the_task_gauge_is_an_error_not_zero() -> None:
    with pytest.raises(ValueError, match="no dask_scheduler_tasks gauge"):
        queued_tasks("# HELP up Whether the target is up.\n# TYPE up gauge\nup 1.0\n")


async def test_a_scrape_round_skips_schedulers_that_do_not_answer(
        busy_scheduler: tuple[Scheduler, str], caplog: pytest.LogCaptureFixture) -> None:
    _, dashboard = busy_scheduler
    gone = f"http://127.0.0.1:{free_port()}"
    async with aiohttp.ClientSession() as session:
        both = await scrape_queued_tasks(session, [dashboard, gone], 2, LOG)
        assert both == PLAIN_TASKS + RESTRICTED_TASKS
        assert gone in caplog.text
        assert await scrape_queued_tasks(session, [gone], 2, LOG) is None
        assert await scrape_queued_tasks(session, [], 2, LOG) == 0
