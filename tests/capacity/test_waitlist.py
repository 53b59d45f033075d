"""What waits for room and where it stands (waitlist.py), and what users are told
(status.py)."""

from __future__ import annotations

import pytest

from daskplatform.gateway.placement import NodeRoom
from daskplatform.gateway.queue import PendingCapExceeded
from daskplatform.gateway.status import (
    Shape,
    fitting,
    quota_room,
    scale_outlook,
    waiting_text,
    workers_waiting_text,
)
from daskplatform.gateway.waitlist import Position, Waitlist

GIB = 2**30


def waitlist() -> Waitlist[str]:
    return Waitlist({"scheduler": 2, "worker": 3})


def test_each_role_is_served_by_priority_then_arrival_and_stops_at_the_first_misfit() -> None:
    lst = waitlist()
    lst.push("worker", "w-analyst", "ann", 1, 1, 1.5, "a")
    lst.push("worker", "w-big", "eve", 2, 2, 3.5, "b")
    lst.push("worker", "w-small", "eve", 2, 0.5, 0.5, "c")
    lst.push("scheduler", "c-1", "ann", 1, 0.25, 0.5, "s")
    assert [r.key for r in lst.waiting("worker")] == ["w-big", "w-small", "w-analyst"]
    assert lst.position("w-analyst") == Position("worker", 3, 3)
    rooms = {"n1": NodeRoom("n1", "worker", 1, 1.5), "s1": NodeRoom("s1", "scheduler", 1, 1)}
    placed = lst.place(rooms)
    # The scheduler goes; the big worker fits nowhere, so nothing behind it jumps ahead.
    assert [(p.request.key, p.node_id) for p in placed] == [("c-1", "s1")]
    assert rooms["s1"] == NodeRoom("s1", "scheduler", 0.75, 0.5)
    rooms["n2"] = NodeRoom("n2", "worker", 2, 3.5)
    # Best fit: the big one fills n2, the small one n1; the analyst's no longer fits.
    assert [(p.request.key, p.node_id) for p in lst.place(rooms)] == [("w-big", "n2"),
                                                                       ("w-small", "n1")]
    assert "w-big" not in lst and lst.position("w-big") is None
    assert lst.position("w-analyst") == Position("worker", 1, 1)


def test_a_user_may_have_only_so_many_waiting() -> None:
    lst = waitlist()
    lst.push("scheduler", "c-1", "ann", 1, 0.25, 0.5, "x")
    lst.push("scheduler", "c-2", "ann", 1, 0.25, 0.5, "x")
    with pytest.raises(PendingCapExceeded):
        lst.push("scheduler", "c-3", "ann", 1, 0.25, 0.5, "x")
    assert lst.remove("c-1") and not lst.remove("c-1")
    lst.push("scheduler", "c-3", "ann", 1, 0.25, 0.5, "x")


def test_what_a_waiting_user_is_told() -> None:
    assert waiting_text(Position("scheduler", 2, 5), "data_analysts") == (
        "waiting for room on the scheduler host: 2 of 5 in line (data_analysts; served by "
        "group priority, then in order of arrival)")
    assert workers_waiting_text([Position("worker", 4, 9), Position("worker", 3, 9)],
                                "admins") == (
        "2 worker(s) waiting for room in the worker pool, the first 3 of 9 in line (admins; "
        "served by group priority, then in order of arrival); the pool adds nodes for them")


@pytest.mark.parametrize("used, limits, room", [
    ((0, 0), (4, 8 * GIB), 4),
    ((1, int(1.5 * GIB)), (4, 8 * GIB), 3),
    ((0, 0), (4, 4 * GIB), 2),  # memory binds: 2 x 1.5 GB in 4 GB
    ((4, 6 * GIB), (4, 8 * GIB), 0),
    ((3.5, 0), (4, 8 * GIB), 0),  # half a core left: no whole worker
    ((0, 0), (None, None), 10**6),
])
def test_quota_room_counts_whole_workers_under_both_totals(used: tuple, limits: tuple,
                                                          room: int) -> None:
    assert quota_room(used, limits, Shape(1, 1.5)) == room


def test_free_room_is_counted_in_whole_workers_per_node() -> None:
    rooms = [NodeRoom("a", "worker", 2, 3.5), NodeRoom("b", "worker", 1, 1.4),
             NodeRoom("c", "worker", 0, 3), NodeRoom("s", "scheduler", 8, 30)]
    assert fitting(rooms, Shape(1, 1.5)) == 2  # b lacks memory, c cores; s is no worker node


@pytest.mark.parametrize("new, room, fit, ahead, told", [
    (2, 5, 4, 0, None),
    (0, 5, 0, 0, None),
    (4, 2, 10, 0, "2 of the 4 new worker(s) would pass your group's total"),
    (4, 9, 1, 0, "3 will wait for room in the worker pool behind 0 waiting already"),
    (2, 9, 3, 2, "1 will wait for room in the worker pool behind 2 waiting already"),
])
def test_a_scale_request_is_told_what_will_not_start_at_once(
        new: int, room: int, fit: int, ahead: int, told: str | None) -> None:
    outlook = scale_outlook(new, room, fit, ahead, "data_engineers")
    assert (outlook is None) == (told is None)
    if told:
        assert told in outlook


def test_a_worker_waits_for_a_node_of_its_version_without_holding_back_others() -> None:
    """During a roll-out a worker of an old cluster may find no node of its version; the
    workers behind it, for another version, are placed all the same."""
    from daskplatform.gateway.placement import NodeRoom
    from daskplatform.gateway.waitlist import Waitlist

    waitlist: Waitlist[str] = Waitlist({"scheduler": 5, "worker": 5})
    waitlist.push("worker", "old-1", "ann", 1, 1, 1, "old-1", version="aaaaaaaaaaaa")
    waitlist.push("worker", "new-1", "bob", 1, 1, 1, "new-1", version="bbbbbbbbbbbb")
    waitlist.push("worker", "old-2", "ann", 1, 1, 1, "old-2", version="aaaaaaaaaaaa")
    rooms = {"n1": NodeRoom("n1", "worker", 4, 4, "bbbbbbbbbbbb")}
    placed = waitlist.place(rooms)
    assert [(p.item, p.node_id) for p in placed] == [("new-1", "n1")]
    assert "old-1" in waitlist and "old-2" in waitlist
    placed = waitlist.place({"n2": NodeRoom("n2", "worker", 4, 4, "aaaaaaaaaaaa")})
    assert [p.item for p in placed] == ["old-1", "old-2"]
