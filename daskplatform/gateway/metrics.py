"""The platform metrics the stack's alarms watch, published to CloudWatch by the gateway.

PendingWorkers is the pool's scale-out signal beside CPU, per worker Auto Scaling group.
ActiveClusters/ActiveWorkers (clusters stranded without workers) and QueuedTasks (work
piling up) have no dimensions, like their alarms in ``components/monitoring.py``.
QueuedTasks comes from each running scheduler's Prometheus endpoint.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from daskplatform.aws import aws_client
from daskplatform.settings import (
    ACTIVE_CLUSTERS_METRIC,
    ACTIVE_WORKERS_METRIC,
    PENDING_WORKERS_METRIC,
    QUEUED_TASKS_METRIC,
)

SCHEDULER_TASKS = "dask_scheduler_tasks"
"""distributed's gauge of the scheduler's tasks, labelled by state."""
WAITING_FOR_A_WORKER = frozenset({"queued", "no-worker"})
"""Task states that wait for a worker slot: queued root tasks, and tasks no current
worker can run (``no-worker``; all ready tasks land there when queuing is off)."""


@dataclass(frozen=True)
class PoolFigures:
    """One round of figures; ``queued_tasks`` is None when no scheduler answered."""

    active_clusters: int
    active_workers: int
    pending_workers: int
    queued_tasks: int | None


def queued_tasks(prometheus_text: str) -> int:
    """Tasks waiting for a worker on one scheduler, from its ``/metrics`` page."""
    samples = [sample for family in text_string_to_metric_families(prometheus_text)
               for sample in family.samples if sample.name == SCHEDULER_TASKS]
    if not samples:
        raise ValueError(f"no {SCHEDULER_TASKS} gauge in the scheduler's metrics (is "
                         "prometheus_client installed on the scheduler host?)")
    return int(sum(s.value for s in samples if s.labels.get("state") in WAITING_FOR_A_WORKER))


async def scrape_queued_tasks(session: aiohttp.ClientSession, dashboards: Iterable[str],
                              timeout: float, log: logging.Logger) -> int | None:
    """Sum of ``queued_tasks`` over the schedulers' dashboards (``http://host:port``), all
    asked at once within ``timeout``; one that fails is logged and left out.

    None when there were schedulers but none answered, so the metric is left missing
    (the alarm treats that as not breaching) rather than published as a false 0."""

    async def one(dashboard: str) -> int | None:
        try:
            async with session.get(f"{dashboard}/metrics",
                                   timeout=aiohttp.ClientTimeout(total=timeout),
                                   raise_for_status=True) as response:
                return queued_tasks(await response.text())
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("Could not read queued tasks from %s: %r", dashboard, exc)
            return None

    dashboards = list(dashboards)
    counts = [c for c in await asyncio.gather(*map(one, dashboards)) if c is not None]
    if dashboards and not counts:
        return None
    return sum(counts)


class CloudWatchPublisher:
    """Puts one round of figures, each with the dimensions its alarm names."""

    def __init__(self, namespace: str, asg_name: str = "") -> None:
        self.namespace = namespace
        self.pool_dimensions = ([{"Name": "AutoScalingGroupName", "Value": asg_name}]
                                if asg_name else [])
        self._client = aws_client("cloudwatch")

    def _metric_data(self, figures: PoolFigures) -> list[dict]:
        def datum(name: str, value: int, dimensions: list[dict[str, str]]) -> dict:
            return {"MetricName": name, "Dimensions": dimensions, "Value": float(value),
                    "Unit": "Count"}

        data = [datum(PENDING_WORKERS_METRIC, figures.pending_workers, self.pool_dimensions),
                datum(ACTIVE_CLUSTERS_METRIC, figures.active_clusters, []),
                datum(ACTIVE_WORKERS_METRIC, figures.active_workers, [])]
        if figures.queued_tasks is not None:
            data.append(datum(QUEUED_TASKS_METRIC, figures.queued_tasks, []))
        return data

    async def publish(self, figures: PoolFigures) -> None:
        await asyncio.to_thread(self._client.put_metric_data, Namespace=self.namespace,
                                MetricData=self._metric_data(figures))
