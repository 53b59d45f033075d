"""The team's workday as plans (pure: seeded, no clock): who arrives when, which
clusters they open, and the bursts of work they ask for. docs/workday.md explains the
numbers; the engine (``workday.py``) plays the plans against the platform.

Each user's plan is drawn from its own random stream (seed and user number), so a user's
day does not change when the team around them does.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from daskplatform.gateway.quotas import GIB
from daskplatform.gateway.status import Shape, quota_room
from daskplatform.settings import ClusterSettings, GroupQuota, QuotaSettings

HOUR = 3600.0
MINUTE = 60.0

GROUP_SHARES = {"admins": 0.1, "data_engineers": 0.4, "data_analysts": 0.5}
"""Share of the team in each platform group: 3 admins, 12 engineers, 15 analysts of 30."""
ARRIVAL = (8 * HOUR, 10.5 * HOUR)
"""Users arrive uniformly through the morning."""
DEPARTURE = (16 * HOUR, 18.5 * HOUR)
"""No new cluster or burst after a user's departure; the running burst still finishes."""
LUNCH_START = (12 * HOUR, 13 * HOUR)
LUNCH_MINUTES = (30.0, 60.0)
"""Nothing new starts during a user's lunch; clusters stay open and keep their workers."""
SESSION_BURSTS = (2, 5)
"""Bursts of work in one session (one cluster), inclusive."""
FIRST_THINK_MINUTES = (2.0, 10.0)
"""From a cluster's start to its first burst (loading data, writing code)."""
THINK_MINUTES = (5.0, 30.0)
"""Between the end of a burst and the next one."""
ABANDON = 0.2
"""Chance a session ends with the cluster left open (the idle timeout stops it) instead of
shut down."""


@dataclass(frozen=True)
class Habits:
    """How a group works: sessions (clusters) a day, inclusive; burst sizes as (weight,
    workers), where None is the most one cluster of the group may have; minutes of work
    at that size; the chance workers are kept, idle, after a burst rather than scaled
    down to none."""

    sessions: tuple[int, int]
    sizes: tuple[tuple[float, int | None], ...]
    work_minutes: tuple[float, float]
    keep: float


HABITS = {
    "admins": Habits((1, 2), ((0.4, 1), (0.4, 2), (0.2, None)), (15.0, 45.0), 0.3),
    "data_engineers": Habits((1, 3), ((0.3, 2), (0.2, 3), (0.5, None)), (10.0, 40.0), 0.4),
    "data_analysts": Habits((1, 3), ((0.4, 1), (0.6, None)), (5.0, 20.0), 0.5),
}
"""Analysts ask for 1-2 workers, engineers 2-4 (their quota), admins mostly 1-2 and one
burst in five a whole cluster's worth (16 default workers)."""


@dataclass(frozen=True)
class Burst:
    think_s: float
    """Seconds after the previous step (cluster placed, or previous burst done)."""
    workers: int
    work_s: float
    """Seconds the work takes with all ``workers``; fewer running workers take longer."""
    keep: bool


@dataclass(frozen=True)
class Session:
    start: float
    """Planned start; later if the previous session ran late, or during lunch."""
    bursts: tuple[Burst, ...]
    abandon: bool


@dataclass(frozen=True)
class UserPlan:
    name: str
    group: str
    arrive: float
    lunch: tuple[float, float]
    leave: float
    sessions: tuple[Session, ...]

    def awake(self, when: float) -> float:
        """``when``, or the end of lunch if it falls during lunch."""
        return self.lunch[1] if self.lunch[0] <= when < self.lunch[1] else when


def group_sizes(users: int) -> dict[str, int]:
    """``users`` split by GROUP_SHARES, largest remainders rounded up."""
    exact = {group: users * share for group, share in GROUP_SHARES.items()}
    sizes = {group: int(value) for group, value in exact.items()}
    by_remainder = sorted(exact, key=lambda g: (sizes[g] - exact[g], g))
    for group in by_remainder[:users - sum(sizes.values())]:
        sizes[group] += 1
    return sizes


def cluster_max_workers(quota: GroupQuota, clusters: ClusterSettings) -> int:
    """Default workers one cluster of the group may have (dask-gateway's
    ``cluster_max_workers``, from the same per-cluster limits)."""
    return quota_room((0.0, 0), (quota.cluster_max_cores, int(quota.cluster_max_memory_gb * GIB)),
                      Shape(clusters.worker_cores, clusters.worker_memory_gb))


def team(users: int, seed: int, quotas: QuotaSettings,
         clusters: ClusterSettings) -> list[UserPlan]:
    """The plans of a team of ``users``, deterministic for ``seed``."""
    plans = []
    for group, size in group_sizes(users).items():
        most = cluster_max_workers(quotas.groups[group], clusters)
        for _ in range(size):
            number = len(plans) + 1
            plans.append(user_plan(f"u{number:02d}", group, most,
                                   random.Random(f"{seed}-{number}")))
    return plans


def user_plan(name: str, group: str, most: int, rng: random.Random) -> UserPlan:
    """One user's day: the group's number of sessions, spread at random over the time
    between arrival and departure (time away from the platform: meetings, other tools),
    back to back if they do not fit."""
    arrive = rng.uniform(*ARRIVAL)
    leave = rng.uniform(*DEPARTURE)
    lunch_start = rng.uniform(*LUNCH_START)
    lunch = (lunch_start, lunch_start + rng.uniform(*LUNCH_MINUTES) * MINUTE)
    drawn = [tuple(_burst(group, most, rng, first=not k)
                   for k in range(rng.randint(*SESSION_BURSTS)))
             for _ in range(rng.randint(*HABITS[group].sessions))]
    lengths = [sum(b.think_s + b.work_s for b in bursts) for bursts in drawn]
    free = max(0.0, leave - arrive - sum(lengths))
    away = sorted(rng.uniform(0, free) for _ in drawn)  # time away before each, cumulative
    sessions = [Session(arrive + away[k] + sum(lengths[:k]), bursts, rng.random() < ABANDON)
                for k, bursts in enumerate(drawn)]
    return UserPlan(name, group, arrive, lunch, leave, tuple(sessions))


def _burst(group: str, most: int, rng: random.Random, first: bool) -> Burst:
    habits = HABITS[group]
    weights, sizes = zip(*habits.sizes)
    workers = rng.choices(sizes, weights)[0] or most
    think = rng.uniform(*(FIRST_THINK_MINUTES if first else THINK_MINUTES)) * MINUTE
    return Burst(think, min(workers, most), rng.uniform(*habits.work_minutes) * MINUTE,
                 rng.random() < habits.keep)
