"""A scheduler preload: each worker's memory, and how long the scheduler has been idle,
on the scheduler's Prometheus page.

distributed's scheduler exports task and worker counts but no per-worker memory, and
the gateway reaches schedulers only (never worker ports), so the pool backend starts
every scheduler with ``--preload daskplatform.gateway.worker_memory``. The figures are
the ones the scheduler already keeps from worker heartbeats, split as Dask's dashboard
splits them (``WorkerState.memory``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily

if TYPE_CHECKING:  # the gateway imports this module for the metric's name only
    from distributed import Scheduler

WORKER_MEMORY = "dask_platform_worker_memory_bytes"
"""Gauge labelled ``worker`` (its name) and ``type``: managed (task results in RAM),
unmanaged (the rest of the process), spilled (task results on disk) and limit (the
worker's memory limit; 0 when it has none)."""
MEMORY_TYPES = ("managed", "unmanaged", "spilled")
IDLE_SECONDS = "dask_platform_scheduler_idle_seconds"
"""Gauge: seconds since the scheduler last had work (0 while busy); the admin listing's
idle time, the same notion the cluster's idle timeout uses."""


class WorkerMemoryCollector:
    """Reads the scheduler's view of its workers each time ``/metrics`` is served."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler

    def collect(self) -> Iterator[GaugeMetricFamily]:
        idle_since = self.scheduler.idle_since
        yield GaugeMetricFamily(IDLE_SECONDS, "Seconds since the scheduler last had work",
                                value=max(0.0, time.time() - idle_since) if idle_since else 0)
        family = GaugeMetricFamily(WORKER_MEMORY, "Memory of each worker, by type, in bytes",
                                   labels=["worker", "type"])
        for worker in list(self.scheduler.workers.values()):
            memory = worker.memory
            for kind in MEMORY_TYPES:
                family.add_metric([str(worker.name), kind], getattr(memory, kind))
            family.add_metric([str(worker.name), "limit"], worker.memory_limit or 0)
        yield family


_collectors: dict[int, WorkerMemoryCollector] = {}
"""Registered collectors by scheduler (tests run schedulers one after another in one
process)."""


def dask_setup(scheduler: Scheduler) -> None:
    collector = _collectors[id(scheduler)] = WorkerMemoryCollector(scheduler)
    REGISTRY.register(collector)


def dask_teardown(scheduler: Scheduler) -> None:
    REGISTRY.unregister(_collectors.pop(id(scheduler)))
