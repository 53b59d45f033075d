"""Requests waiting for room, schedulers and workers alike (pure: no I/O).

Each role has its own queue (``queue.PendingQueue``: group priority, then first come,
first served); placement walks each queue in service order and stops at the first
request that fits nowhere, so a large request is never starved by a stream of small
ones behind it (per runtime version: a worker waiting for a node of its cluster's
version holds back only workers of that version).
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass, replace
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
        self.versions: dict[str, str] = {}
        """Requests that must run on one runtime version (a worker: its scheduler's)."""

    def push(self, role: str, key: str, user: str, priority: int, cores: float,
             memory_gb: float, item: T, version: str = "") -> None:
        """Queue a request; raises PendingCapExceeded naming the cap when the user is full."""
        self.queues[role].push(key, user, priority, cores, memory_gb)
        self.items[key] = (role, item)
        if version:
            self.versions[key] = version

    def remove(self, key: str) -> bool:
        """Drop a request (placed or cancelled); False if it was not waiting."""
        self.versions.pop(key, None)
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
            blocked: set[str] = set()
            """Versions whose first request fit nowhere: later ones of it wait behind it
            (requests for another version's nodes do not)."""
            for request in self.queues[role].ordered():
                version = self.versions.get(request.key, "")
                if version in blocked:
                    continue
                node_id = best_fit(rooms.values(), role, request.cores, request.memory_gb,
                                   version)
                if node_id is None:
                    blocked.add(version)
                    continue
                room = rooms[node_id]
                rooms[node_id] = replace(room, free_cores=room.free_cores - request.cores,
                                         free_memory_gb=room.free_memory_gb - request.memory_gb)
                placed.append(Placement(role, request, self.items[request.key][1], node_id))
                self.remove(request.key)
        return placed
