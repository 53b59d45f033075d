"""Best fit and the priority queue: pure functions, checked directly."""

from __future__ import annotations

import pytest

from daskplatform.gateway.placement import NodeRoom, best_fit
from daskplatform.gateway.queue import PendingCapExceeded, PendingQueue


def test_best_fit_picks_the_fullest_node_that_still_fits() -> None:
    nodes = [NodeRoom("empty", "worker", 2, 3.5), NodeRoom("half", "worker", 1, 2.0),
             NodeRoom("full", "worker", 0.5, 0.2)]
    assert best_fit(nodes, "worker", 1, 1.5) == "half"
    assert best_fit(nodes, "worker", 2, 3.0) == "empty"
    assert best_fit(nodes, "worker", 2, 4.0) is None


def test_best_fit_respects_roles() -> None:
    nodes = [NodeRoom("sched", "scheduler", 4, 7), NodeRoom("work", "worker", 0.5, 0.5)]
    assert best_fit(nodes, "worker", 1, 1) is None
    assert best_fit(nodes, "scheduler", 1, 1) == "sched"
    assert best_fit(nodes, "worker", 0.5, 0.5) == "work"


def test_queue_serves_priority_then_arrival() -> None:
    queue = PendingQueue(max_pending_per_user=5)
    queue.push("analyst-1", "ann", priority=1, cores=1, memory_gb=1)
    queue.push("engineer-1", "eve", priority=2, cores=1, memory_gb=1)
    queue.push("analyst-2", "ann", priority=1, cores=1, memory_gb=1)
    queue.push("admin-1", "ada", priority=3, cores=1, memory_gb=1)
    assert [r.key for r in queue.ordered()] == ["admin-1", "engineer-1", "analyst-1",
                                                "analyst-2"]
    assert queue.remove("admin-1") and not queue.remove("admin-1")
    assert [r.key for r in queue.ordered()][0] == "engineer-1"


def test_queue_caps_pending_per_user_and_frees_slots_on_remove() -> None:
    queue = PendingQueue(max_pending_per_user=2)
    queue.push("a", "ann", 1, 1, 1)
    queue.push("b", "ann", 1, 1, 1)
    queue.push("a", "ann", 1, 1, 1)  # same request again: idempotent, not a third
    with pytest.raises(PendingCapExceeded, match="maxPendingPerUser = 2"):
        queue.push("c", "ann", 1, 1, 1)
    queue.push("x", "bob", 1, 1, 1)  # other users are not affected
    queue.remove("a")
    queue.push("c", "ann", 1, 1, 1)
    assert queue.pending_for("ann") == 2 and len(queue) == 3
