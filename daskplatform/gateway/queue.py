"""Worker requests waiting for room in the pool (pure: no I/O).

Served by group priority first, then first come first served; each user may have at
most ``max_pending_per_user`` requests waiting, so one user's huge scale request can
not hold the whole queue.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field


class PendingCapExceeded(Exception):
    """The user already has the most requests allowed waiting."""


@dataclass(frozen=True, order=True)
class PendingRequest:
    """One worker waiting for a node; ordering is the service order."""

    sort_key: tuple[int, int] = field(repr=False)
    key: str = field(compare=False)
    user: str = field(compare=False)
    priority: int = field(compare=False)
    cores: float = field(compare=False)
    memory_gb: float = field(compare=False)


class PendingQueue:
    """Priority FIFO with a per-user cap."""

    def __init__(self, max_pending_per_user: int) -> None:
        self.max_pending_per_user = max_pending_per_user
        self._requests: dict[str, PendingRequest] = {}
        self._per_user: Counter[str] = Counter()
        self._sequence = itertools.count()

    def push(self, key: str, user: str, priority: int, cores: float,
             memory_gb: float) -> PendingRequest:
        """Add a request; raises PendingCapExceeded naming the cap when the user is full."""
        if key in self._requests:
            return self._requests[key]
        if self._per_user[user] >= self.max_pending_per_user:
            raise PendingCapExceeded(
                f"user {user} already has {self._per_user[user]} worker(s) waiting for room "
                f"in the pool (quotas.maxPendingPerUser = {self.max_pending_per_user})"
            )
        request = PendingRequest((-priority, next(self._sequence)), key, user, priority,
                                 cores, memory_gb)
        self._requests[key] = request
        self._per_user[user] += 1
        return request

    def remove(self, key: str) -> bool:
        """Drop a request (placed or cancelled); False if it was not waiting."""
        request = self._requests.pop(key, None)
        if request is None:
            return False
        self._per_user[request.user] -= 1
        if not self._per_user[request.user]:
            del self._per_user[request.user]
        return True

    def ordered(self) -> list[PendingRequest]:
        """Requests in service order: highest priority first, oldest first within it."""
        return sorted(self._requests.values())

    def pending_for(self, user: str) -> int:
        return self._per_user[user]

    def __contains__(self, key: object) -> bool:
        return key in self._requests

    def __len__(self) -> int:
        return len(self._requests)
