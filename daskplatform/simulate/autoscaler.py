"""The worker Auto Scaling group, simulated: nodes boot and join, and the stack's three
policies (components/worker_pool.py) add and remove them through the same rules
(``daskplatform.scaling``) every alarm period."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from daskplatform.scaling import NodeShape, backlog_nodes, scale_in, scale_out
from daskplatform.settings import WorkerPoolSettings
from daskplatform.simulate.clock import Clock
from daskplatform.simulate.nodes import Node

METRIC_PERIOD_SECONDS = 60
"""How often the alarms evaluate, as components/worker_pool.py declares them."""
SCALE_OUT_PERIODS = 3
"""Periods of high CPU before the baseline policy adds a node (components/worker_pool.py)."""


@dataclass(frozen=True)
class Removal:
    """A node scale-in terminated, with the processes it ran then (always none)."""

    node_id: str
    at: float
    processes: int


class WorkerGroup:
    """Desired capacity is every node not terminated, booting ones included; a node
    launched less than ``cooldownSeconds`` ago is warming up and counts toward what a
    scale-out step asks for (Auto Scaling's instance warm-up), so one backlog is not
    added twice."""

    def __init__(self, settings: WorkerPoolSettings, shape: NodeShape, boot_seconds: float,
                 clock: Clock, on_join: Callable[[], None]) -> None:
        self.settings = settings
        self.shape = shape
        self.boot_seconds = boot_seconds
        self.clock = clock
        self.on_join = on_join
        self.nodes: list[Node] = []
        self.removals: list[Removal] = []
        self._high_periods = 0
        self._low_periods = 0
        for _ in range(settings.min):  # started before the day, long out of warm-up
            self._add(-settings.cooldown_seconds, 0.0)

    def live(self) -> list[Node]:
        return [n for n in self.nodes if n.left is None]

    def serving(self) -> list[Node]:
        return [n for n in self.nodes if n.serving(self.clock.now)]

    def evaluate(self, pending: list[tuple[float, float]], busy_cores: float) -> None:
        """One alarm period: the backlog policy, the CPU baseline, then scale-in."""
        settings, now = self.settings, self.clock.now
        serving = self.serving()
        cpu = 100 * busy_cores / (len(serving) * self.shape.cores) if serving else 0.0
        self._scale_out(backlog_nodes(pending, self.shape))
        self._high_periods = self._high_periods + 1 if cpu > settings.scale_out_cpu else 0
        if self._high_periods >= SCALE_OUT_PERIODS:
            self._scale_out(1)
        idle = [n for n in serving if not n.processes]
        low = cpu < settings.scale_in_cpu and bool(idle)
        self._low_periods = self._low_periods + 1 if low else 0
        if self._low_periods >= settings.cooldown_seconds // METRIC_PERIOD_SECONDS:
            count = scale_in(len(idle), len(self.live()), settings.min, cpu,
                             settings.scale_in_cpu)
            for node in idle[:count]:
                node.left = now
                self.removals.append(Removal(node.node_id, now, len(node.processes)))

    def _scale_out(self, nodes: int) -> None:
        now = self.clock.now
        warming = sum(now - n.launched < self.settings.cooldown_seconds for n in self.live())
        for _ in range(scale_out(max(0, nodes - warming), len(self.live()), self.settings.max)):
            node = self._add(now, now + self.boot_seconds)
            self.clock.at(node.joins, self.on_join)

    def _add(self, launched: float, joins: float) -> Node:
        node = Node(f"worker-{len(self.nodes) + 1:03d}", "worker", self.shape, launched, joins)
        self.nodes.append(node)
        return node
