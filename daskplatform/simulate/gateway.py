"""The pool backend's bookkeeping on the simulated clock: schedulers and workers go
through the gateway's own Waitlist (group priority, then arrival; best-fit placement)
and UserLedger (per-user totals), as ``gateway/backend.py`` uses them, with no
processes, agents or HTTP. Starting a placed process takes no time here (a fork on a
warm interpreter: about 0.1 s)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from daskplatform.gateway.backend import MAX_WAITING_CLUSTERS
from daskplatform.gateway.queue import PendingCapExceeded
from daskplatform.gateway.quotas import GIB, UserLedger, UserQuotaExceeded
from daskplatform.gateway.waitlist import Waitlist
from daskplatform.scaling import NodeShape
from daskplatform.settings import PlatformSettings, node_capacity
from daskplatform.simulate.autoscaler import WorkerGroup
from daskplatform.simulate.clock import Clock
from daskplatform.simulate.nodes import Node

SCHEDULER_HOST = "scheduler-host"


@dataclass(eq=False)
class SimWorker:
    key: str
    cluster: SimCluster
    requested: float
    node: Node | None = None


@dataclass(eq=False)
class SimCluster:
    name: str
    user: str
    group: str
    submitted: float
    stopped: bool = False
    workers: list[SimWorker] = field(default_factory=list)

    def running(self) -> int:
        return sum(w.node is not None for w in self.workers)


@dataclass(frozen=True)
class Wait:
    """From request to placement (a scheduler on its host, a worker on a node)."""

    role: str
    group: str
    seconds: float
    served: bool
    """False: cancelled while it waited, so ``seconds`` is a lower bound."""


class SimGateway:
    def __init__(self, settings: PlatformSettings, pool: WorkerGroup, clock: Clock,
                 on_placed: Callable[[SimCluster], None],
                 on_workers: Callable[[SimCluster], None]) -> None:
        """``on_placed``: a cluster's scheduler was placed; ``on_workers``: a cluster's
        running workers changed."""
        self.quotas = settings.quotas
        self.shapes = settings.clusters
        self.pool = pool
        self.clock = clock
        self.on_placed = on_placed
        self.on_workers = on_workers
        self.host = Node(SCHEDULER_HOST, "scheduler",
                         NodeShape(*node_capacity(settings.scheduler, settings.clusters)),
                         0.0, 0.0)
        self.waitlist: Waitlist[SimCluster | SimWorker] = Waitlist(
            {"scheduler": MAX_WAITING_CLUSTERS, "worker": self.quotas.max_pending_per_user})
        self.ledger = UserLedger()
        self.clusters: list[SimCluster] = []
        self.waits: list[Wait] = []
        self.capped = 0
        self.refused = 0
        self._numbers = itertools.count(1)

    def held_by(self, user: str) -> list[SimCluster]:
        """The user's clusters not stopped (running or waiting), oldest first."""
        return [c for c in self.clusters if c.user == user and not c.stopped]

    def submit(self, cluster: SimCluster) -> bool:
        """Queue the cluster's scheduler; False (refused) when the user already holds
        their group's ``maxClusters``, as ``PoolBackend.start_cluster`` refuses it."""
        quota = self.quotas.groups[cluster.group]
        if len(self.held_by(cluster.user)) >= quota.max_clusters:
            self.refused += 1
            return False
        self.clusters.append(cluster)
        self.waitlist.push("scheduler", cluster.name, cluster.user, quota.priority,
                           self.shapes.scheduler_cores, self.shapes.scheduler_memory_gb, cluster)
        self.dispatch()
        return True

    def scale(self, cluster: SimCluster, count: int) -> None:
        """Start or stop workers until the cluster has ``count``. A worker past the
        user's total (or the pending cap) is capped, not queued; scaling down stops
        waiting workers first, then the newest placed ones."""
        quota = self.quotas.groups[cluster.group]
        cores, memory_gb = self.shapes.worker_cores, self.shapes.worker_memory_gb
        for _ in range(count - len(cluster.workers)):
            worker = SimWorker(f"{cluster.name}-w{next(self._numbers)}", cluster,
                               self.clock.now)
            try:
                self.ledger.hold(worker.key, cluster.user, cores, int(memory_gb * GIB),
                                 quota.user_max_cores, int(quota.user_max_memory_gb * GIB))
                try:
                    self.waitlist.push("worker", worker.key, cluster.user, quota.priority,
                                       cores, memory_gb, worker)
                except PendingCapExceeded:
                    self.ledger.release(worker.key)
                    raise
            except (UserQuotaExceeded, PendingCapExceeded):
                self.capped += 1
                continue
            cluster.workers.append(worker)
        newest_first = cluster.workers[::-1]
        victims = ([w for w in newest_first if w.node is None]
                   + [w for w in newest_first if w.node is not None])
        for worker in victims[:max(0, len(cluster.workers) - count)]:
            self._stop_worker(worker)
        self.dispatch()
        self.on_workers(cluster)

    def stop(self, cluster: SimCluster) -> None:
        """Stop the cluster and its workers; the room they held goes to who waits."""
        if cluster.stopped:
            return
        cluster.stopped = True
        if self.waitlist.remove(cluster.name):
            self._record("scheduler", cluster.group, cluster.submitted, served=False)
        for worker in list(cluster.workers):
            self._stop_worker(worker)
        self.host.processes.pop(cluster.name, None)
        self.dispatch()

    def dispatch(self) -> None:
        """Place what waits, in service order, on the scheduler host and the worker nodes
        in service (``Waitlist.place``, as ``PoolBackend._dispatch``)."""
        nodes = {n.node_id: n for n in (self.host, *self.pool.serving())}
        rooms = {node_id: node.room() for node_id, node in nodes.items()}
        for placement in self.waitlist.place(rooms):
            request, item = placement.request, placement.item
            node = nodes[placement.node_id]
            node.processes[request.key] = (request.cores, request.memory_gb)
            if isinstance(item, SimCluster):
                self._record("scheduler", item.group, item.submitted, served=True)
                self.on_placed(item)
            else:
                item.node = node
                self._record("worker", item.cluster.group, item.requested, served=True)
                self.on_workers(item.cluster)

    def _stop_worker(self, worker: SimWorker) -> None:
        if self.waitlist.remove(worker.key):
            self._record("worker", worker.cluster.group, worker.requested, served=False)
        self.ledger.release(worker.key)
        if worker.node is not None:
            worker.node.processes.pop(worker.key)
        worker.cluster.workers.remove(worker)

    def _record(self, role: str, group: str, since: float, served: bool) -> None:
        self.waits.append(Wait(role, group, self.clock.now - since, served))
