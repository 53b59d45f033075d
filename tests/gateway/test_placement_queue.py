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


def test_best_fit_skips_a_node_short_of_cores_though_it_has_the_memory() -> None:
    nodes = [NodeRoom("cores-short", "worker", 0.5, 8.0), NodeRoom("roomy", "worker", 2, 2.0)]
    assert best_fit(nodes, "worker", 1, 1) == "roomy"
    assert best_fit(nodes, "worker", 0.5, 1) == "roomy"  # less memory left there


def test_best_fit_skips_a_node_short_of_memory_though_it_has_the_cores() -> None:
    nodes = [NodeRoom("memory-short", "worker", 8, 1.0), NodeRoom("roomy", "worker", 2, 8.0)]
    assert best_fit(nodes, "worker", 1, 1.5) == "roomy"


def test_a_request_exactly_a_nodes_room_fits_even_after_float_sums() -> None:
    nodes = [NodeRoom("exact", "worker", 0.1 + 0.2, 1.5)]
    assert best_fit(nodes, "worker", 0.3, 1.5) == "exact"
    assert best_fit(nodes, "worker", 0.31, 1.5) is None
    assert best_fit(nodes, "worker", 0.3, 1.51) is None


def test_memory_left_decides_before_cores_left() -> None:
    nodes = [NodeRoom("few-cores-left", "worker", 1.5, 4.0),
             NodeRoom("little-memory-left", "worker", 4, 2.0)]
    assert best_fit(nodes, "worker", 1, 1.5) == "little-memory-left"


def test_ties_go_to_fewer_cores_left_then_to_the_first_node_id() -> None:
    memory_tie = [NodeRoom("a", "worker", 4, 2.0), NodeRoom("b", "worker", 2, 2.0)]
    assert best_fit(memory_tie, "worker", 1, 1) == "b"
    full_tie = [NodeRoom("node-2", "worker", 2, 2.0), NodeRoom("node-1", "worker", 2, 2.0)]
    assert best_fit(full_tie, "worker", 1, 1) == "node-1"
    assert best_fit(reversed(full_tie), "worker", 1, 1) == "node-1"


def test_room_left_is_compared_exactly_not_in_request_sized_steps() -> None:
    """0.1 GB left beats 0.9 GB left, though both hold the request once more (2.1 // 2 ==
    2.9 // 2); 0.5 left beats 2.1 left, though 2.1 % 2 is the smaller remainder."""
    for resource in ("memory", "cores"):
        def node(node_id: str, room: float) -> NodeRoom:
            return NodeRoom(node_id, "worker", *((9, room) if resource == "memory"
                                                  else (room, 9)))
        assert best_fit([node("a", 2.9), node("b", 2.1)], "worker", 2, 2) == "b", resource
        assert best_fit([node("a", 4.1), node("b", 2.5)], "worker", 2, 2) == "b", resource


def test_with_a_version_only_nodes_on_that_version_are_candidates() -> None:
    nodes = [NodeRoom("old", "worker", 1, 1.5, version="1.0"),
             NodeRoom("new", "worker", 4, 16, version="1.1"),
             NodeRoom("newer", "worker", 2, 4, version="1.2")]
    assert best_fit(nodes, "worker", 1, 1.5) == "old"  # no version: the fullest
    assert best_fit(nodes, "worker", 1, 1.5, version="1.1") == "new"
    assert best_fit(nodes, "worker", 1, 1.5, version="1.0") == "old"
    assert best_fit(nodes, "worker", 1, 1.5, version="2.0") is None
    reported = "".join(["1.", "1"])  # as read from an agent's report, not a literal
    assert best_fit(nodes, "worker", 1, 1.5, version=reported) == "new"


def test_roles_read_from_agents_match_and_no_other_role_is_a_candidate() -> None:
    worker = "".join(["work", "er"])  # as read from an agent's report, not a literal
    nodes = [NodeRoom("w", worker, 4, 8)]
    assert best_fit(nodes, "worker", 1, 1) == "w"
    assert best_fit(nodes, "scheduler", 1, 1) is None
    assert best_fit([NodeRoom("s", "scheduler", 4, 8)], "worker", 1, 1) is None


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
