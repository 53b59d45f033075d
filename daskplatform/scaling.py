"""The worker pool's scaling signals and the steps they drive (pure: no I/O).

The gateway publishes two figures per worker group:

- ``BacklogNodes``: how many more worker nodes the waiting workers need, packed
  first-fit-decreasing onto the node shape (node-equivalents, so 50 pending 1.5 GB
  workers ask for 25 nodes at once, not one per alarm period);
- ``IdleNodes``: in-service nodes with no Dask process (the only ones the gateway leaves
  unprotected from scale-in), which are the only nodes scale-in may remove.

The stack's step policies (``components/worker_pool.py``) turn them into capacity
changes with :func:`backlog_steps` and :func:`idle_steps`; the workday simulation uses
:func:`scale_out` and :func:`scale_in` to apply the same rule to its simulated group.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

MAX_STEPS = 20
"""Step adjustments in one Auto Scaling step policy (the service's limit): a backlog of
more nodes than this adds this many per alarm period until it is served."""
_EPSILON = 1e-9


@dataclass(frozen=True)
class NodeShape:
    """What one worker node offers Dask processes (after the node reserve)."""

    cores: float
    memory_gb: float

    def fits(self, cores: float, memory_gb: float) -> bool:
        return cores <= self.cores + _EPSILON and memory_gb <= self.memory_gb + _EPSILON


def backlog_nodes(pending: Iterable[tuple[float, float]], node: NodeShape) -> int:
    """Empty nodes of ``node``'s shape that would hold every pending (cores, GB) worker,
    packed first-fit-decreasing by memory; workers no node can hold are left out (they
    are refused before they queue)."""
    bins: list[list[float]] = []
    for cores, memory in sorted(pending, key=lambda r: (r[1], r[0]), reverse=True):
        if not node.fits(cores, memory):
            continue
        for room in bins:
            if cores <= room[0] + _EPSILON and memory <= room[1] + _EPSILON:
                room[0] -= cores
                room[1] -= memory
                break
        else:
            bins.append([node.cores - cores, node.memory_gb - memory])
    return len(bins)


def scale_out(backlog: int, desired: int, maximum: int) -> int:
    """Nodes to add for ``backlog``: all of it at once (in steps of at most MAX_STEPS),
    never past ``maximum``."""
    return max(0, min(backlog, MAX_STEPS, maximum - desired))


def scale_in(idle: int, desired: int, minimum: int, cpu: float, scale_in_cpu: float) -> int:
    """Nodes to remove: only idle (empty, unprotected) ones, only while the pool's CPU is
    below ``scale_in_cpu``, never below ``minimum``."""
    if cpu >= scale_in_cpu:
        return 0
    return max(0, min(idle, MAX_STEPS, desired - minimum))


def backlog_steps(maximum: int) -> list[tuple[float, float | None, int]]:
    """(lower, upper, adjustment) step adjustments for an alarm ``BacklogNodes > 0.5``:
    a backlog of n nodes adds n (the last step, open-ended, adds its own n)."""
    steps = min(MAX_STEPS, maximum)
    return [(n - 1.0, None if n == steps else float(n), n) for n in range(1, steps + 1)]


def idle_steps(maximum: int) -> list[tuple[float, float | None, int]]:
    """The scale-in mirror of :func:`backlog_steps`: n idle nodes remove n."""
    return [(lower, upper, -n) for lower, upper, n in backlog_steps(maximum)]
