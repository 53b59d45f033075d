"""The platform metrics the stack's alarms watch, published to CloudWatch by the gateway.

BacklogNodes and IdleNodes are the pool's scaling signals beside CPU (per worker Auto
Scaling group, as PendingWorkers; daskplatform.scaling).
ActiveClusters/ActiveWorkers (clusters stranded without workers) and QueuedTasks (work
piling up) have no dimensions, like their alarms in ``components/monitoring.py``.
QueuedTasks and each worker's memory come from each running scheduler's Prometheus
endpoint; the memory figures go out as one sample per worker. ClusterStartLatencySeconds
goes out as raw values (one per cluster started since the last round), so CloudWatch
keeps percentiles of it: its alarm watches the p90.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from daskplatform.aws import aws_client
from daskplatform.gateway.worker_memory import IDLE_SECONDS, WORKER_MEMORY
from daskplatform.settings import (
    ACTIVE_CLUSTERS_METRIC,
    ACTIVE_WORKERS_METRIC,
    BACKLOG_NODES_METRIC,
    CLUSTER_START_METRIC,
    IDLE_NODES_METRIC,
    PENDING_WORKERS_METRIC,
    POOL_MEMORY_RESERVED_METRIC,
    QUEUED_TASKS_METRIC,
    WORKER_MANAGED_METRIC,
    WORKER_MEMORY_PERCENT_METRIC,
    WORKER_SPILLED_METRIC,
    WORKER_UNMANAGED_METRIC,
)

SCHEDULER_TASKS = "dask_scheduler_tasks"
"""distributed's gauge of the scheduler's tasks, labelled by state."""
WAITING_FOR_A_WORKER = frozenset({"queued", "no-worker"})
"""Task states that wait for a worker slot: queued root tasks, and tasks no current
worker can run (``no-worker``; all ready tasks land there when queuing is off)."""


@dataclass(frozen=True)
class WorkerMemory:
    """One worker's memory in bytes, as Dask splits it."""

    cluster: str
    worker: str
    managed: int = 0
    unmanaged: int = 0
    spilled: int = 0
    limit: int = 0
    """Its memory limit (0: none)."""

    @property
    def used_percent(self) -> float | None:
        """Process memory (managed + unmanaged) as a percentage of the limit."""
        return 100 * (self.managed + self.unmanaged) / self.limit if self.limit else None


@dataclass(frozen=True)
class SchedulerReading:
    """What one scheduler's ``/metrics`` page says."""

    queued_tasks: int
    workers: tuple[WorkerMemory, ...]
    idle_seconds: float | None = None
    """Since the scheduler last had work (0 while busy); None without the preload."""


@dataclass(frozen=True)
class PoolFigures:
    """One round of figures; ``queued_tasks`` is None when no scheduler answered."""

    active_clusters: int
    active_workers: int
    pending_workers: int
    queued_tasks: int | None
    workers: tuple[WorkerMemory, ...] = ()
    backlog_nodes: int = 0
    idle_nodes: int = 0
    memory_reserved_percent: float | None = None
    """Memory placed on usable worker nodes over what they offer; None without any."""
    start_latencies: tuple[tuple[str, float], ...] = ()
    """(platform group, seconds from request to first worker) of each cluster whose first
    worker started running since the last round."""


def read_page(prometheus_text: str, cluster: str) -> SchedulerReading:
    """Tasks waiting for a worker and each worker's memory, from one scheduler's page.

    Worker memory comes from the platform's scheduler preload
    (``daskplatform.gateway.worker_memory``); a scheduler without it lists no workers."""
    tasks: list[tuple[str, float]] = []
    memory: dict[str, dict[str, int]] = {}
    idle: float | None = None
    for family in text_string_to_metric_families(prometheus_text):
        for sample in family.samples:
            if sample.name == SCHEDULER_TASKS:
                tasks.append((sample.labels.get("state", ""), sample.value))
            elif sample.name == IDLE_SECONDS:
                idle = sample.value
            elif sample.name == WORKER_MEMORY:
                worker = memory.setdefault(sample.labels["worker"], {})
                worker[sample.labels["type"]] = int(sample.value)
    if not tasks:
        raise ValueError(f"no {SCHEDULER_TASKS} gauge in the scheduler's metrics (is "
                         "prometheus_client installed on the scheduler host?)")
    return SchedulerReading(
        queued_tasks=int(sum(value for state, value in tasks if state in WAITING_FOR_A_WORKER)),
        workers=tuple(WorkerMemory(cluster, name, **types) for name, types in memory.items()),
        idle_seconds=idle,
    )


async def read_schedulers(session: aiohttp.ClientSession, dashboards: Mapping[str, str],
                          timeout: float, log: logging.Logger) -> list[SchedulerReading | None]:
    """The pages of the schedulers' dashboards (cluster name -> ``http://host:port``),
    all asked at once within ``timeout``; None (and a log line) for one that fails."""

    async def one(cluster: str, dashboard: str) -> SchedulerReading | None:
        try:
            async with session.get(f"{dashboard}/metrics",
                                   timeout=aiohttp.ClientTimeout(total=timeout),
                                   raise_for_status=True) as response:
                return read_page(await response.text(), cluster)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("Could not read the metrics of %s from %s: %r", cluster, dashboard,
                        exc)
            return None

    return list(await asyncio.gather(*(one(c, d) for c, d in dashboards.items())))


def queued_tasks(readings: list[SchedulerReading | None]) -> int | None:
    """Tasks waiting on all schedulers that answered; None when there were schedulers but
    none answered, so the metric is left missing (the alarm treats that as not breaching)
    rather than published as a false 0."""
    answered = [reading for reading in readings if reading is not None]
    if readings and not answered:
        return None
    return sum(reading.queued_tasks for reading in answered)


def worker_memory(readings: list[SchedulerReading | None]) -> tuple[WorkerMemory, ...]:
    """Every worker of the schedulers that answered."""
    return tuple(worker for reading in readings if reading is not None
                 for worker in reading.workers)


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
                datum(BACKLOG_NODES_METRIC, figures.backlog_nodes, self.pool_dimensions),
                datum(IDLE_NODES_METRIC, figures.idle_nodes, self.pool_dimensions),
                datum(ACTIVE_CLUSTERS_METRIC, figures.active_clusters, []),
                datum(ACTIVE_WORKERS_METRIC, figures.active_workers, [])]
        if figures.queued_tasks is not None:
            data.append(datum(QUEUED_TASKS_METRIC, figures.queued_tasks, []))
        if figures.workers:
            data += [_per_worker(name, [getattr(w, kind) for w in figures.workers])
                     for name, kind in ((WORKER_MANAGED_METRIC, "managed"),
                                        (WORKER_UNMANAGED_METRIC, "unmanaged"),
                                        (WORKER_SPILLED_METRIC, "spilled"))]
        percents = [p for w in figures.workers if (p := w.used_percent) is not None]
        if percents:
            data.append(_per_worker(WORKER_MEMORY_PERCENT_METRIC, percents, "Percent"))
        if figures.memory_reserved_percent is not None:
            data.append({"MetricName": POOL_MEMORY_RESERVED_METRIC, "Dimensions": [],
                         "Value": figures.memory_reserved_percent, "Unit": "Percent"})
        return data + _latencies(figures.start_latencies)

    async def publish(self, figures: PoolFigures) -> None:
        await asyncio.to_thread(self._client.put_metric_data, Namespace=self.namespace,
                                MetricData=self._metric_data(figures))


MAX_VALUES = 150
"""Values one datum may carry (PutMetricData)."""


def _latencies(latencies: tuple[tuple[str, float], ...]) -> list[dict]:
    """Raw values (not a statistic set, which has no percentiles): all clusters without
    dimensions, for the alarm, and each group's under ``Group``, for the dashboard."""
    by_group: dict[str, list[float]] = {}
    for group, seconds in latencies:
        by_group.setdefault(group, []).append(seconds)
    series = [([], [s for _, s in latencies]),
              *(([{"Name": "Group", "Value": g or "none"}], v) for g, v in by_group.items())]
    return [{"MetricName": CLUSTER_START_METRIC, "Dimensions": dimensions,
             "Values": values[i:i + MAX_VALUES], "Counts": [1.0] * len(values[i:i + MAX_VALUES]),
             "Unit": "Seconds"}
            for dimensions, values in series for i in range(0, len(values), MAX_VALUES)]


def _per_worker(name: str, values: list[float], unit: str = "Bytes") -> dict:
    """One datum holding a sample per worker (no per-worker dimension: workers come and
    go, and each dimension value would be a metric of its own)."""
    return {"MetricName": name, "Dimensions": [], "Unit": unit,
            "StatisticValues": {"SampleCount": float(len(values)), "Sum": float(sum(values)),
                                "Minimum": float(min(values)), "Maximum": float(max(values))}}
