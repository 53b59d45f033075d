"""Requests waiting for room, schedulers and workers alike (pure: no I/O).

Each role has its own queue (``queue.PendingQueue``: group priority, then first come,
first served); placement walks each queue in service order and stops at the first
request that fits nowhere, so a large request is never starved by a stream of small
ones behind it.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from daskplatform.gateway.placement import NodeRoom, best_fit
from daskplatform.gateway.queue import PendingQueue, PendingRequest

ROLES = ("scheduler", "worker")
T = TypeVar("T")


@dataclass(frozen=True)
class Placement(Generic[T]):
    role: str
    request: PendingRequest
    item: T
    node_id: str


@dataclass(frozen=True)
class Position:
    """Where a waiting request stands: ``place`` of ``total`` in its role's queue."""

    role: str
    place: int
    total: int


class Waitlist(Generic[T]):
    """What waits for room, by role, with the object each request stands for."""

    def __init__(self, max_pending_per_user: dict[str, int]) -> None:
        self.queues = {role: PendingQueue(max_pending_per_user[role]) for role in ROLES}
        self.items: dict[str, tuple[str, T]] = {}

    def push(self, role: str, key: str, user: str, priority: int, cores: float,
             memory_gb: float, item: T) -> None:
        """Queue a request; raises PendingCapExceeded naming the cap when the user is full."""
        self.queues[role].push(key, user, priority, cores, memory_gb)
        self.items[key] = (role, item)

    def remove(self, key: str) -> bool:
        """Drop a request (placed or cancelled); False if it was not waiting."""
        found = self.items.pop(key, None)
        return found is not None and self.queues[found[0]].remove(key)

    def __contains__(self, key: object) -> bool:
        return key in self.items

    def waiting(self, role: str) -> list[PendingRequest]:
        return self.queues[role].ordered()

    def position(self, key: str) -> Position | None:
        found = self.items.get(key)
        if found is None:
            return None
        ordered = self.queues[found[0]].ordered()
        place = next(i for i, r in enumerate(ordered, start=1) if r.key == key)
        return Position(found[0], place, len(ordered))

    def place(self, rooms: MutableMapping[str, NodeRoom]) -> list[Placement[T]]:
        """Take every request that fits, in service order per role, updating ``rooms``
        (node id -> room) as each is placed; placed requests leave the list."""
        placed: list[Placement[T]] = []
        for role in ROLES:
            for request in self.queues[role].ordered():
                node_id = best_fit(rooms.values(), role, request.cores, request.memory_gb)
                if node_id is None:
                    break
                room = rooms[node_id]
                rooms[node_id] = NodeRoom(node_id, role, room.free_cores - request.cores,
                                          room.free_memory_gb - request.memory_gb)
                placed.append(Placement(role, request, self.items[request.key][1], node_id))
                self.remove(request.key)
        return placed
