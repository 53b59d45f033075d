"""The pool's scaling signals and steps (daskplatform.scaling): backlog in
node-equivalents, scale-out of the whole backlog at once, scale-in of idle nodes only."""

from __future__ import annotations

import pytest

from daskplatform.scaling import (
    MAX_STEPS,
    NodeShape,
    backlog_nodes,
    backlog_steps,
    idle_steps,
    scale_in,
    scale_out,
)

C5_LARGE = NodeShape(2, 3.5)
"""A c5.large after the 0.5 GB node reserve."""


@pytest.mark.parametrize("pending, nodes", [
    ([], 0),
    ([(1, 1.5)], 1),
    ([(1, 1.5)] * 2, 1),  # two default workers share a node
    ([(1, 1.5)] * 3, 2),
    ([(1, 1.5)] * 50, 25),  # the 50 pending workers: 25 nodes at once, not 1
    ([(2, 3.5)] * 3, 3),  # exactly a node each
    ([(0.5, 3.0), (1.5, 0.5)], 1),  # memory-heavy and core-heavy share one node
    ([(1, 2.0), (1, 2.0)], 2),  # 4 GB of memory does not fit 3.5
    ([(2, 1.0), (1, 1.0)], 2),  # cores bind though memory would fit
    ([(4, 8.0), (1, 1.5)], 1),  # no node holds the first: it is left out
])
def test_backlog_is_the_nodes_the_waiting_workers_need(pending: list, nodes: int) -> None:
    assert backlog_nodes(pending, C5_LARGE) == nodes


def test_backlog_packs_largest_first() -> None:
    """First fit in arrival order would take 3 nodes; largest first takes 2."""
    pending = [(0.5, 1.0), (0.5, 1.0), (1.5, 2.5), (1.5, 2.5)]
    assert backlog_nodes(pending, C5_LARGE) == 2


@pytest.mark.parametrize("backlog, desired, maximum, added", [
    (0, 5, 20, 0), (1, 5, 20, 1), (10, 5, 20, 10), (25, 5, 20, 15), (25, 0, 100, MAX_STEPS),
    (3, 20, 20, 0), (3, 21, 20, 0),
])
def test_scale_out_adds_the_backlog_at_once_within_max(backlog: int, desired: int,
                                                      maximum: int, added: int) -> None:
    assert scale_out(backlog, desired, maximum) == added


@pytest.mark.parametrize("idle, desired, minimum, cpu, removed", [
    (3, 10, 5, 10, 3),
    (3, 10, 5, 29.9, 3),
    (3, 10, 5, 30, 0),  # CPU not low: nothing leaves
    (3, 6, 5, 10, 1),  # never below min
    (0, 10, 5, 10, 0),  # busy nodes are never asked for, whatever the CPU
    (30, 50, 0, 0, MAX_STEPS),
])
def test_scale_in_removes_idle_nodes_only_while_cpu_is_low(idle: int, desired: int,
                                                         minimum: int, cpu: float,
                                                         removed: int) -> None:
    assert scale_in(idle, desired, minimum, cpu, scale_in_cpu=30) == removed


def test_steps_cover_every_breach_once() -> None:
    steps = backlog_steps(20)
    assert len(steps) == MAX_STEPS
    assert steps[0] == (0.0, 1.0, 1) and steps[-1] == (19.0, None, 20)
    assert all(a[1] == b[0] for a, b in zip(steps, steps[1:]))  # contiguous, no overlap
    assert backlog_steps(3) == [(0.0, 1.0, 1), (1.0, 2.0, 2), (2.0, None, 3)]
    assert idle_steps(3) == [(0.0, 1.0, -1), (1.0, 2.0, -2), (2.0, None, -3)]
