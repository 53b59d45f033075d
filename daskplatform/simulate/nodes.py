"""A simulated host: what it offers Dask processes, what it runs, and when it is billed
and in service."""

from __future__ import annotations

from dataclasses import dataclass, field

from daskplatform.gateway.placement import NodeRoom
from daskplatform.scaling import NodeShape


@dataclass(eq=False)
class Node:
    node_id: str
    role: str
    capacity: NodeShape
    launched: float
    """Billed from here (a booting node costs as much as a serving one)."""
    joins: float
    """In service from here: booted, its agent serving."""
    left: float | None = None
    processes: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Process key -> (cores, GB) reserved."""

    def serving(self, now: float) -> bool:
        return self.joins <= now and self.left is None

    def room(self) -> NodeRoom:
        """Free room as the gateway computes it: capacity minus reservations."""
        return NodeRoom(self.node_id, self.role,
                        self.capacity.cores - sum(c for c, _ in self.processes.values()),
                        self.capacity.memory_gb - sum(m for _, m in self.processes.values()))

    def billed_seconds(self, start: float, end: float) -> float:
        """Seconds of [start, end] this node was running (launched, not yet terminated)."""
        stop = end if self.left is None else min(self.left, end)
        return max(0.0, stop - max(self.launched, start))
