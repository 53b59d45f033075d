"""What a stretch of the day cost at on-demand prices (``costs.instancePricesUsdPerHour``),
against the same stretch with the pool kept at ``workers.max``. The scheduler and
gateway hosts run all the time in both; EBS volumes are left out of both."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from daskplatform.settings import PlatformSettings
from daskplatform.simulate.nodes import Node
from daskplatform.simulate.workload import HOUR


@dataclass(frozen=True)
class Bill:
    hours: float
    worker_node_hours: float
    workers_usd: float
    hosts_usd: float
    """Scheduler host and gateway host."""
    always_max_usd: float

    @property
    def total_usd(self) -> float:
        return self.workers_usd + self.hosts_usd

    @property
    def savings(self) -> float:
        """Fraction saved against the always-max pool."""
        return 1 - self.total_usd / self.always_max_usd


def bill(settings: PlatformSettings, workers: Iterable[Node], start: float,
         end: float) -> Bill:
    costs = settings.costs
    hours = (end - start) / HOUR
    node_price = costs.hourly(settings.workers.instance_type)
    node_hours = sum(node.billed_seconds(start, end) for node in workers) / HOUR
    hosts = hours * (costs.hourly(settings.scheduler.instance_type)
                     + costs.hourly(settings.gateway.instance_type))
    return Bill(hours, node_hours, node_hours * node_price, hosts,
                hours * settings.workers.max * node_price + hosts)
