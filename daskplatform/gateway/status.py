"""What a user (or an admin, for everyone) is told about clusters and the pool: states,
what waits and why, its place in line (pure: no I/O).

Shown through ``GET /api/v1/status`` (``dask-platform status``), in each cluster's
report (``options["platform_status"]``, which ``gateway.list_clusters()`` returns), and
in the warning a scale request that will wait comes back with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from daskplatform.gateway.placement import NodeRoom
from daskplatform.gateway.waitlist import Position

WHERE = {"scheduler": "on the scheduler host", "worker": "in the worker pool"}
ORDER = "served by group priority, then in order of arrival"


def waiting_text(position: Position, group: str) -> str:
    return (f"waiting for room {WHERE[position.role]}: {position.place} of {position.total} "
            f"in line ({group}; {ORDER})")


def workers_waiting_text(positions: list[Position], group: str) -> str:
    first = min(p.place for p in positions)
    return (f"{len(positions)} worker(s) waiting for room in the worker pool, the first "
            f"{first} of {positions[0].total} in line ({group}; {ORDER}); the pool adds "
            "nodes for them")


@dataclass(frozen=True)
class Shape:
    cores: float
    memory_gb: float


def fitting(rooms: list[NodeRoom], shape: Shape) -> int:
    """How many processes of ``shape`` the worker nodes' free room takes now."""
    return sum(int(min(r.free_cores / shape.cores, r.free_memory_gb / shape.memory_gb)
                   + 1e-9)
               for r in rooms if r.role == "worker" and r.free_cores > 0
               and r.free_memory_gb > 0)


def scale_outlook(new_workers: int, quota_room: int, fit_now: int, ahead: int,
                  group: str) -> str | None:
    """What a scale request adding ``new_workers`` will meet: the user's group total
    (``quota_room`` more allowed), the pool's free room (``fit_now``) and the
    ``ahead`` workers already waiting before it. None when all start at once."""
    if new_workers <= 0:
        return None
    notes = []
    allowed = min(new_workers, quota_room)
    if allowed < new_workers:
        notes.append(f"{new_workers - allowed} of the {new_workers} new worker(s) would pass "
                     f"your group's total (quotas.groups.{group}.userMaxCores/"
                     "userMaxMemoryGb, counted over all your clusters) and will not start")
    starting = max(0, min(allowed, fit_now - ahead))
    waiting = allowed - starting
    if waiting:
        notes.append(f"{waiting} will wait for room in the worker pool behind {ahead} "
                     f"waiting already ({group}; {ORDER}); the pool adds nodes for them")
    return "; ".join(notes) or None


def quota_room(used: tuple[float, int], limits: tuple[float | None, int | None],
               shape: Shape) -> int:
    """More workers of ``shape`` a user may start before their group's total."""
    free = []
    if limits[0] is not None:
        free.append((limits[0] - used[0]) / shape.cores)
    if limits[1] is not None:
        free.append((limits[1] - used[1]) / (shape.memory_gb * 2**30))
    return max(0, math.floor(min(free) + 1e-9)) if free else 10**6
