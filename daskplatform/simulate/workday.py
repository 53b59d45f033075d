"""One workday on the simulated clock: each user's plan (``workload.py``) opens clusters
and asks for workers through the simulated gateway (``gateway.py``), and the worker group
(``autoscaler.py``) applies the stack's scaling policies every alarm period.

A burst's work is counted in worker-seconds: it runs at the speed of the workers it has,
so workers that wait make the burst, and the user's day, longer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

from daskplatform.scaling import NodeShape
from daskplatform.settings import PlatformSettings, node_capacity
from daskplatform.simulate.autoscaler import METRIC_PERIOD_SECONDS, Removal, WorkerGroup
from daskplatform.simulate.clock import Clock, Timer
from daskplatform.simulate.gateway import SimCluster, SimGateway, Wait
from daskplatform.simulate.nodes import Node
from daskplatform.simulate.workload import HOUR, MINUTE, Burst, UserPlan

DAY_SECONDS = 24 * HOUR
BUSY_CPU = 0.9
"""Share of its cores a worker uses while its cluster computes (CPU-bound work)."""
IDLE_CPU = 0.02
"""Share of its cores a worker uses while its cluster waits for its user."""


@dataclass(frozen=True)
class Sample:
    """The pool at one alarm period, after the policies acted."""

    at: float
    desired: int
    serving: int
    running_workers: int
    queued_workers: int


@dataclass(frozen=True)
class Outcome:
    day_seconds: float
    waits: tuple[Wait, ...]
    samples: tuple[Sample, ...]
    nodes: tuple[Node, ...]
    """Worker nodes, every one the day launched."""
    removals: tuple[Removal, ...]
    capped_workers: int
    refused_clusters: int
    idle_stops: int
    held_core_seconds: float
    """Worker cores reserved by placed workers, integrated over the day."""
    busy_core_seconds: float
    """Worker cores those workers kept busy (BUSY_CPU, IDLE_CPU), integrated."""


@dataclass(eq=False)
class Activity:
    """What one cluster's user is doing with it."""

    plan: UserPlan
    session: int
    cluster: SimCluster
    step: int = 0
    computing: bool = False
    work_left: float = 0.0
    rate: int = 0
    since: float = 0.0
    finish: Timer | None = None
    idle: Timer | None = None

    def burst(self) -> Burst:
        return self.plan.sessions[self.session].bursts[self.step]


class Workday:
    def __init__(self, settings: PlatformSettings, plans: Sequence[UserPlan],
                 boot_seconds: float, day_seconds: float = DAY_SECONDS) -> None:
        """``boot_seconds``: from a node's launch to its agent serving."""
        self.settings = settings
        self.plans = plans
        self.day_seconds = day_seconds
        self.idle_timeout = settings.quotas.idle_timeout_minutes * MINUTE
        self.clock = Clock()
        shape = NodeShape(*node_capacity(settings.workers, settings.clusters))
        self.pool = WorkerGroup(settings.workers, shape, boot_seconds, self.clock,
                                on_join=lambda: self.gateway.dispatch())
        self.gateway = SimGateway(settings, self.pool, self.clock, self._placed,
                                  self._workers_changed)
        self.activities: dict[str, Activity] = {}
        self.samples: list[Sample] = []
        self.idle_stops = 0
        self.held_core_seconds = 0.0
        self.busy_core_seconds = 0.0

    def run(self) -> Outcome:
        for plan in self.plans:
            self.clock.at(plan.awake(plan.sessions[0].start), partial(self._open, plan, 0))
        self.clock.at(METRIC_PERIOD_SECONDS, self._alarm)
        self.clock.run(self.day_seconds, self._elapse)
        return Outcome(self.day_seconds, tuple(self.gateway.waits), tuple(self.samples),
                       tuple(self.pool.nodes), tuple(self.pool.removals),
                       self.gateway.capped, self.gateway.refused, self.idle_stops,
                       self.held_core_seconds, self.busy_core_seconds)

    # ------------------------------------------------------------------ the pool

    def _alarm(self) -> None:
        gateway = self.gateway
        pending = [(r.cores, r.memory_gb) for r in gateway.waitlist.waiting("worker")]
        self.pool.evaluate(pending, self._cores()[1])
        self.samples.append(Sample(
            self.clock.now, len(self.pool.live()), len(self.pool.serving()),
            sum(a.cluster.running() for a in self.activities.values()),
            len(gateway.waitlist.queues["worker"])))
        self.clock.at(self.clock.now + METRIC_PERIOD_SECONDS, self._alarm)

    def _cores(self) -> tuple[float, float]:
        """(held, busy) worker cores now."""
        held = busy = 0.0
        for activity in self.activities.values():
            cores = activity.cluster.running() * self.settings.clusters.worker_cores
            held += cores
            busy += cores * (BUSY_CPU if activity.computing else IDLE_CPU)
        return held, busy

    def _elapse(self, start: float, end: float) -> None:
        held, busy = self._cores()
        self.held_core_seconds += held * (end - start)
        self.busy_core_seconds += busy * (end - start)

    # ------------------------------------------------------------------ the users

    def _open(self, plan: UserPlan, session: int) -> None:
        """A new session: submit a cluster. Refused at the group's most clusters, the user
        stops their oldest one (as the refusal tells them) and submits again."""
        if self.clock.now >= plan.leave:
            return
        cluster = SimCluster(f"{plan.name}-c{session + 1}", plan.name, plan.group,
                             self.clock.now)
        self.activities[cluster.name] = Activity(plan, session, cluster)
        if not self.gateway.submit(cluster):
            self._stop(self.gateway.held_by(plan.name)[0])
            self.gateway.submit(cluster)

    def _placed(self, cluster: SimCluster) -> None:
        activity = self.activities[cluster.name]
        self._arm_idle(activity)
        self._next(activity)

    def _next(self, activity: Activity) -> None:
        plan, now = activity.plan, self.clock.now
        bursts = plan.sessions[activity.session].bursts
        if activity.step == len(bursts) or now >= plan.leave:
            self._end(activity)
            return
        when = plan.awake(now + activity.burst().think_s)
        self.clock.at(when, partial(self._start_burst, activity))

    def _start_burst(self, activity: Activity) -> None:
        if activity.cluster.stopped or self.clock.now >= activity.plan.leave:
            self._end(activity)
            return
        burst = activity.burst()
        if activity.idle is not None:
            activity.idle.cancel()
        activity.computing = True
        activity.work_left = burst.workers * burst.work_s
        activity.since, activity.rate = self.clock.now, 0
        self.gateway.scale(activity.cluster, burst.workers)
        if not activity.cluster.workers:  # all capped: the user is told so and gives up
            self._burst_done(activity)

    def _workers_changed(self, cluster: SimCluster) -> None:
        """Work goes on at the new number of running workers."""
        activity = self.activities[cluster.name]
        if not activity.computing:
            return
        now = self.clock.now
        activity.work_left -= activity.rate * (now - activity.since)
        activity.since, activity.rate = now, cluster.running()
        if activity.finish is not None:
            activity.finish.cancel()
        activity.finish = None if not activity.rate else self.clock.at(
            now + max(0.0, activity.work_left) / activity.rate,
            partial(self._burst_done, activity))

    def _burst_done(self, activity: Activity) -> None:
        activity.computing, activity.finish = False, None
        if not activity.burst().keep:
            self.gateway.scale(activity.cluster, 0)
        activity.step += 1
        self._arm_idle(activity)
        self._next(activity)

    def _end(self, activity: Activity) -> None:
        """The session is over: shut the cluster down, or leave it to the idle timeout;
        then the next session, when planned (at once if the day runs late)."""
        plan = activity.plan
        if not plan.sessions[activity.session].abandon:
            self._stop(activity.cluster)
        following = activity.session + 1
        if following < len(plan.sessions):
            when = plan.awake(max(self.clock.now, plan.sessions[following].start))
            self.clock.at(when, partial(self._open, plan, following))

    def _arm_idle(self, activity: Activity) -> None:
        if activity.idle is not None:
            activity.idle.cancel()
        activity.idle = self.clock.at(self.clock.now + self.idle_timeout,
                                      partial(self._idle_out, activity))

    def _idle_out(self, activity: Activity) -> None:
        if not activity.cluster.stopped:
            self.idle_stops += 1
            self._stop(activity.cluster)

    def _stop(self, cluster: SimCluster) -> None:
        activity = self.activities[cluster.name]
        for timer in (activity.finish, activity.idle):
            if timer is not None:
                timer.cancel()
        activity.computing = False
        self.gateway.stop(cluster)
