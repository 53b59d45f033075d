"""The pool backend: dask-gateway clusters on a warm pool of nodes run by node agents.

Schedulers go to scheduler-role nodes, workers and users' notebook servers
(``notebooks``) to worker-role nodes, each by best fit (``placement``). A worker that finds no room waits in the priority queue (``queue``);
a worker that would take its user past the group total (``quotas``) is capped. All
state a stop needs (node, agent URL, process id) is checkpointed in the gateway's
database, so a restarted gateway finds and stops what an earlier one started.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import os
import signal
import ssl
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from dask_gateway_server.backends.base import ClusterConfig, PublicException
from dask_gateway_server.backends.db_base import Cluster, DBBackendBase, JobStatus, Worker
from dask_gateway_server.models import ClusterStatus, User
from dask_gateway_server.routes import api_handler
from dask_gateway_server.traitlets import MemoryLimit
from traitlets import Dict, Float, Integer, List, Tuple, Unicode, default

from daskplatform.audit import trail
from daskplatform.aws import stand_in_env
from daskplatform.gateway.accounting import Accounting, BudgetExceeded
from daskplatform.gateway.admin import AdminRoutes
from daskplatform.gateway.api_input import StartRollout, checked_body, validate_requests
from daskplatform.gateway.credentials import CredentialRoutes
from daskplatform.gateway.dask_config import dask_env, max_spill_config
from daskplatform.gateway.dashboards import Dashboards, HubLogin
from daskplatform.gateway.directory import NodeSpec, asg_worker_nodes, tagged_scheduler_nodes
from daskplatform.gateway.heartbeats import unlisted_as_closed
from daskplatform.gateway.metrics import (
    CloudWatchPublisher,
    PoolFigures,
    SchedulerReading,
    queued_tasks,
    read_schedulers,
    worker_memory,
)
from daskplatform.gateway.notebooks import SINGLEUSER_ARGS, Notebook, NotebookRoutes, token_hash
from daskplatform.gateway.placement import NodeRoom
from daskplatform.gateway.protection import ScaleInProtection
from daskplatform.gateway.queue import PendingCapExceeded
from daskplatform.gateway.quotas import GIB, UserLedger, UserQuotaExceeded
from daskplatform.gateway.rollout import NodeView, Rollout
from daskplatform.gateway.status import (
    Shape,
    fitting,
    quota_room,
    scale_outlook,
    waiting_text,
    workers_waiting_text,
)
from daskplatform.gateway.usage import NodePrice, UsageLedger
from daskplatform.gateway.waitlist import Placement, Waitlist
from daskplatform.host.upgrade import upgrade_in_background
from daskplatform.node.client import NodeAgentClient, NodeAgentError, NodeUnreachable
from daskplatform.runtime_config import load_runtime_settings
from daskplatform.runtime_version import running_version
from daskplatform.scaling import NodeShape, backlog_nodes

ALIVE = ("starting", "running")
"""Agent process states that still hold resources."""
Pooled = Cluster | Worker | Notebook
"""What is placed on nodes: a cluster's scheduler, a worker, a user's notebook server."""
MAX_WAITING_CLUSTERS = 20
"""Clusters one user may have waiting for the scheduler host (quotas cap what they hold)."""
ROLLOUT_FILE = "rollout.json"
DRAINED_FILE = "drained.json"
"""Nodes an admin drained, kept across restarts."""
USAGE_FILE = "usage.sqlite"
"""The usage ledger, in the state directory (usage.py)."""
DASK_KINDS = ("scheduler", "worker")
"""Processes the pool backend starts (an agent may run others: notebooks)."""


class PoolClusterConfig(ClusterConfig):
    """Cluster config with fractional cores and the user's group quota snapshot.

    The group fields are set by the options handler (``quotas.cluster_overrides``) and
    stored with the cluster, so a restarted gateway enforces the same totals.
    """

    worker_cores = Float(1, min=0.0, help="Cores per worker (default 1).", config=True)
    scheduler_cores = Float(1, min=0.0, help="Cores per scheduler (default 1).",
                            config=True)
    platform_group = Unicode("", help="Platform group of the owner (default: none).",
                             config=True)
    priority = Integer(1, help="Queue priority of the owner's group (default 1).",
                       config=True)
    user_max_cores = Float(None, allow_none=True, config=True,
                           help="Worker cores over all of the owner's clusters "
                                "(default None: unlimited).")
    user_max_memory = MemoryLimit(None, allow_none=True, config=True,
                                  help="Worker memory over all of the owner's clusters "
                                       "(default None: unlimited).")
    platform_uid = Integer(None, allow_none=True, config=True,
                           help="uid the cluster's processes run under (default None: the "
                                "agent's own).")
    platform_gid = Integer(None, allow_none=True, config=True,
                           help="gid the cluster's processes run under (default None).")
    max_clusters = Integer(None, allow_none=True, config=True,
                           help="Clusters the owner may hold at once, running or waiting "
                                "(default None: unlimited).")
    scheduler_cpu_limit = Float(None, allow_none=True, config=True,
                                help="Cores the scheduler may burst to (its cgroup cap; "
                                     "default None: scheduler_cores).")
    scheduler_memory_limit = MemoryLimit(None, allow_none=True, config=True,
                                         help="The scheduler's hard memory limit (default "
                                              "None: scheduler_memory).")
    notebook_cores = Float(0.5, min=0.0, config=True,
                           help="Cores of the owner's JupyterLab server (default 0.5).")
    notebook_memory = MemoryLimit("1 G", config=True,
                                  help="Memory of the owner's JupyterLab server (default 1 G).")
    started_by = Unicode("", config=True,
                         help="Hash of the notebook's hub token that created the cluster "
                              "(default '': not from a notebook); it stops with the notebook.")


@dataclass
class NodeState:
    """What the backend knows about one node agent."""

    spec: NodeSpec
    client: NodeAgentClient
    cores: float = 0.0
    memory_gb: float = 0.0
    known: bool = False
    """Capacity fetched at least once."""
    failures: int = 0
    lost: bool = False
    set_aside: bool = False
    """Did not answer a start; skipped by placement until it answers a health check."""
    reserved: dict[str, tuple[float, float]] = field(default_factory=dict)
    """process id -> (cores, GB) of every process this backend placed here."""
    agent_used: tuple[float, float] = (0.0, 0.0)
    """(cores, GB) of live processes in the agent's last listing, but those stopping."""
    stopping: set[str] = field(default_factory=set)
    """Processes this backend asked to stop: their room is free already."""
    alive_processes: int = 0
    version: str = ""
    """The runtime version its agent reports."""
    upgrade: dict[str, Any] | None = None
    """Its agent's report of the last in-place upgrade asked of it."""
    holders: list[str] = field(default_factory=list)
    """Users with processes on it (a roll-out names them when it cannot drain it)."""
    reconciled: bool = False
    """Its processes were compared with the database since this gateway started."""

    def room(self) -> NodeRoom:
        ours = (sum(c for c, _ in self.reserved.values()),
                sum(m for _, m in self.reserved.values()))
        return NodeRoom(self.spec.node_id, self.spec.role,
                        self.cores - max(ours[0], self.agent_used[0]),
                        self.memory_gb - max(ours[1], self.agent_used[1]), self.version)

    @property
    def usable(self) -> bool:
        return self.known and not self.lost and not self.set_aside

    @property
    def busy(self) -> bool:
        return bool(self.reserved) or self.alive_processes > 0


class PoolBackend(DBBackendBase):
    """Runs each cluster's scheduler and workers through the node agents of the pool."""

    @default("cluster_config_class")
    def _pool_cluster_config(self) -> type[PoolClusterConfig]:
        return PoolClusterConfig

    nodes = List(Dict(), help="""Static nodes: dicts with node_id, role (scheduler|worker)
        and agent_url. Default: [] (then only discovered nodes).""", config=True)
    asg_name = Unicode("", help="""Worker Auto Scaling group: its InService instances are
        worker nodes and get scale-in protection while they hold processes.
        Default: "" (no worker discovery).""", config=True)
    stack_name = Unicode("", help="""Stack whose running instances tagged
        dask-platform:role=scheduler are scheduler nodes. Default: "" (no scheduler
        discovery).""", config=True)
    agent_port = Integer(8790, help="Agent port on discovered nodes (default 8790).",
                         config=True)
    agent_scheme = Unicode("http", help="Scheme for discovered agents "
                                        "(default http; https when agents have TLS).",
                           config=True)
    agent_ca_file = Unicode("", help="CA bundle that signs the agents' certificates "
                                     "(default: system trust store).", config=True)
    agent_token = Unicode("", help="Bearer token for the node agents (default: none).",
                          config=True)
    agent_timeout = Float(10, help="Seconds for one agent call (default 10).", config=True)
    stop_grace = Float(10, help="Seconds between SIGTERM and SIGKILL on stop (default 10).",
                       config=True)
    node_check_period = Float(5, help="Seconds between node health rounds (default 5).",
                              config=True)
    worker_connect_timeout = Float(60, help="""Seconds a placed worker has to register with
        its scheduler before it is replaced (default 60, timeouts.workerStartSeconds). The
        gateway's own worker_start_timeout also covers the time spent queued, so without
        this a started worker that never connects would hold its place for that long.""",
        config=True)
    cluster_connect_timeout = Float(60, help="""Seconds a placed scheduler has to connect to
        the gateway before its cluster fails (default 60, timeouts.clusterStartSeconds).
        The gateway's own cluster_start_timeout also covers the time a cluster waits for
        room on the scheduler host.""", config=True)
    node_lost_after = Integer(3, min=1, help="""Failed health rounds in a row after which a
        node is lost and its processes are marked failed (default 3).""", config=True)
    directory_refresh_period = Float(30, help="""Seconds between node discoveries
        (Auto Scaling group and scheduler tags; default 30).""", config=True)
    max_pending_per_user = Integer(50, min=1, help="""Worker requests one user may have
        waiting for room (default 50, quotas.maxPendingPerUser).""", config=True)
    metrics_namespace = Unicode("", help="""CloudWatch namespace for the platform metrics
        (PendingWorkers, ActiveClusters, ActiveWorkers, QueuedTasks, worker memory,
        ClusterStartLatencySeconds).
        Default: "" (not published).""", config=True)
    metrics_period = Float(60, help="Seconds between CloudWatch publications (default 60).",
                           config=True)
    metrics_scrape_timeout = Float(5, help="""Seconds to read one scheduler's /metrics for
        QueuedTasks and worker memory (default 5); all schedulers are read at once.""",
        config=True)
    worker_node = Tuple(Float(), Float(), default_value=(2.0, 3.5), help="""(cores, GB) one
        worker node offers Dask processes: the unit of BacklogNodes (default (2, 3.5), a
        c5.large less the node reserve; gateway_config sets it from the settings).""",
        config=True)
    dask_config = Dict(help="""Dask config of every scheduler and worker, nested as
        dask.config reads it, passed as DASK_* environment variables
        (daskplatform.gateway.dask_config). Default: {} (Dask's own defaults);
        gateway_config sets it from the clusters.* settings.""", config=True)
    spill_disk_per_memory = Float(0, min=0, help="""Bytes a worker may spill to disk per
        byte of its memory (distributed.worker.memory.max-spill = this x worker memory).
        Default 0: no cap (Dask's default); gateway_config sets clusters.nodeSpillDiskGb
        divided by a worker node's memory.""", config=True)
    orphan_grace = Float(300, min=0, help="""Seconds a Dask process on a node that no
        record of this gateway explains (the orphan of a lost database) may run before it
        is stopped (default 300, timeouts.orphanGraceSeconds).""", config=True)
    drain_seconds = Float(7200, min=0, help="""Seconds a roll-out waits for a busy worker
        node to empty before reporting it stuck (default 7200, timeouts.drainSeconds).""",
        config=True)
    state_dir = Unicode("", help="""Directory kept across restarts (the gateway's durable
        state) where a roll-out's progress is kept. Default: "" (roll-outs refused).""",
        config=True)
    node_prices = Dict(help="""Process kind -> [cores, GB, USD per hour] of the node it
        runs on, for usage costs (usage.py). Default: {} (costs of 0); gateway_config sets
        it from the settings' instance types and costs.instancePricesUsdPerHour.""",
        config=True)
    budgets = Dict(help="""Platform group -> monthly budget in USD (accounting.py).
        Default: {} (no budgets); gateway_config sets quotas.groups.*.monthlyBudgetUsd.""",
        config=True)
    usage_period = Float(60, min=0.1, help="""Seconds between usage rounds: budget alerts,
        per-group metrics, the daily report (default 60).""", config=True)
    audit_log = Unicode("", help="""The audit trail's file (JSON lines), as the gateway's
        --audit-log names it; the process's trail (audit.py) writes there. Default: ""
        (set by config_from_argv: audit.log in the temp dir).""", config=True)
    audit_bucket = Unicode("", help="""The audit bucket: daily usage reports. Default: ""
        (no reports).""", config=True)
    alert_topic_arn = Unicode("", help="""SNS topic for budget alerts. Default: "" (logged
        only).""", config=True)
    data_roles = Dict(help="""Platform group -> the IAM role (name) the gateway assumes for
        its members' data credentials (credentials.py). Default: {} (none vended);
        gateway_config sets the settings' dataRoles.""", config=True)
    data_session_seconds = Integer(3600, min=900, max=3600, help="""How long vended data
        credentials last (default 3600, dataAccess.sessionMinutes).""", config=True)
    pipeline_user = Unicode("", help="""The pipeline's service account: its credentials
        are the pipeline role's (data_roles["pipeline"]), not its group's. Default: ""
        (none; gateway_config sets pipeline.serviceUser).""", config=True)
    settings_source = Unicode("", help="""Where the settings come from (ssm://...): a
        roll-out re-reads runtimeVersion there. Default: "" (a roll-out must name its
        version).""", config=True)

    # ------------------------------------------------------------------ setup / cleanup

    async def setup(self, app: web.Application) -> None:
        await super().setup(app)
        self._dashboards = Dashboards(self, self.proxy.prefix, _hub_login(app, self.proxy.prefix))
        app.middlewares.append(validate_requests)  # refuses bad input before any handler
        app.middlewares.append(self._explain_scale)
        self._list_handler = api_handler(self._list_route, user_authenticated=True)
        app.middlewares.append(self._admins_list_all)
        app.middlewares.append(_remember_notebook_token)
        app.add_routes([
            web.get("/api/v1/pool", api_handler(self._pool_route, user_authenticated=True)),
            web.get("/api/v1/pool/workers",
                    api_handler(self._workers_route, user_authenticated=True)),
            web.get("/api/v1/status", api_handler(self._status_route, user_authenticated=True)),
            *self._dashboards.routes(),
            *NotebookRoutes(self).routes(),
            *AdminRoutes(self).routes(),
            *CredentialRoutes(self).routes(),
            web.get("/api/v1/rollout", api_handler(self._rollout_route,
                                                   user_authenticated=True)),
            web.post("/api/v1/rollout", api_handler(self._start_rollout_route,
                                                    user_authenticated=True)),
        ])

    async def _check_cluster_proxied(self, cluster: Cluster) -> None:
        """Only the scheduler's TLS route: dashboards are not routed by the proxy, whose
        path routes answer anyone, but served by the gateway after a login check
        (dashboards.py)."""
        if not cluster.added_to_proxies:
            await self.proxy.add_route(kind="SNI", sni=cluster.name,
                                       target=cluster.scheduler_address)
            cluster.added_to_proxies = True

    async def do_setup(self) -> None:
        self._nodes: dict[str, NodeState] = {}
        self._waitlist: Waitlist[Pooled] = Waitlist(
            {"scheduler": MAX_WAITING_CLUSTERS, "worker": self.max_pending_per_user})
        self._ledger = UserLedger()
        self._launches: dict[str, asyncio.Task[None]] = {}
        self._submit_lock = asyncio.Lock()
        self._ssl = ssl.create_default_context(cafile=self.agent_ca_file) \
            if self.agent_ca_file else None
        self._protection = ScaleInProtection(self.asg_name) if self.asg_name else None
        self._capped_total = 0
        self._start_latencies: list[tuple[str, float]] = []
        """(group, seconds) of clusters whose first worker ran since the last metrics round."""
        self.notebooks: dict[str, Notebook] = {}
        """User -> their JupyterLab server (notebooks.py)."""
        self._version = running_version()
        self._orphans: dict[tuple[str, str], float] = {}
        """(node, process) -> when first seen without a record."""
        self._tasks: set[asyncio.Task[Any]] = set()
        self._rollout_path = Path(self.state_dir) / ROLLOUT_FILE if self.state_dir else None
        self._rollout = Rollout.load(self._rollout_path) if self._rollout_path else None
        self.log.info("Gateway on runtime %s", self._version)
        static = [NodeSpec.from_dict(raw) for raw in self.nodes]
        self._static_ids = {spec.node_id for spec in static}
        for spec in static:
            self._add_node(spec)
        self._restore_checkpoints()
        ledger_path = Path(self.state_dir) / USAGE_FILE if self.state_dir else None
        self.accounting = Accounting(
            UsageLedger(ledger_path, {k: NodePrice(*v) for k, v in self.node_prices.items()}),
            self.budgets, alert_topic_arn=self.alert_topic_arn, audit_bucket=self.audit_bucket,
            metrics_namespace=self.metrics_namespace, log=self.log)
        self._usage_task = asyncio.ensure_future(self._usage_loop())
        self._drained_path = Path(self.state_dir) / DRAINED_FILE if self.state_dir else None
        self._drained: set[str] = set(json.loads(self._drained_path.read_text())) \
            if self._drained_path and self._drained_path.exists() else set()
        self._ready = asyncio.Event()
        self._loop_task = asyncio.ensure_future(self._node_loop())
        self._metrics_task = asyncio.ensure_future(self._metrics_loop()) \
            if self.metrics_namespace else None
        await asyncio.wait_for(self._ready.wait(), self.agent_timeout * 2)

    async def do_cleanup(self) -> None:
        for task in (self._loop_task, self._metrics_task, self._usage_task,
                     *self._launches.values(), *self._tasks):
            if task is not None:
                task.cancel()
        for node in self._nodes.values():
            await node.client.close()
        await self._dashboards.close()
        self.accounting.ledger.close()

    def _add_node(self, spec: NodeSpec) -> NodeState:
        node = self._nodes.get(spec.node_id)
        if node is None:
            client = NodeAgentClient(spec.agent_url, self.agent_token,
                                     timeout=self.agent_timeout, ssl=self._ssl)
            node = self._nodes[spec.node_id] = NodeState(spec, client)
        return node

    def _restore_checkpoints(self) -> None:
        """Rebuild reservations, holds and the queue from the database (gateway restart).

        Runs before the first await of do_setup, so no start can race it.
        """
        for cluster in self.db.active_clusters():
            state = cluster.state or {}
            if "node_id" in state:
                self._reserve(state, cluster.config.scheduler_cores,
                              cluster.config.scheduler_memory)
            elif state.get("queued"):
                self._enqueue_cluster(cluster)
            cfg = cluster.config
            for worker in cluster.active_workers():
                wstate = worker.state or {}
                if "node_id" in wstate or wstate.get("queued"):
                    self._ledger.hold(worker.name, cluster.username, cfg.worker_cores,
                                      cfg.worker_memory, None, None)
                if "node_id" in wstate:
                    self._reserve(wstate, cfg.worker_cores, cfg.worker_memory)
                elif wstate.get("queued"):
                    self._enqueue(worker)

    def _reserve(self, state: dict[str, Any], cores: float, memory_bytes: int) -> None:
        node = self._add_node(NodeSpec(state["node_id"], state["role"], state["agent_url"]))
        node.reserved[state["process_id"]] = (cores, memory_bytes / GIB)
        self.log.info("Reconcile: the database places %s on node %s; re-adopting it",
                      state["process_id"], state["node_id"])

    # ------------------------------------------------------------------ clusters

    def get_scheduler_command(self, cluster: Cluster) -> list[str]:
        """Arguments of ``dask scheduler``; the agent fills in {host} and {portN}."""
        return [
            "--protocol", "tls", "--host", "{host}", "--port", "{port0}",
            "--dashboard-address", "{host}:{port1}",
            "--preload", "dask_gateway.scheduler_preload",
            "--preload", "daskplatform.gateway.worker_memory",
            "--dg-api-address", "{host}:{port2}",
            "--dg-heartbeat-period", str(self.cluster_heartbeat_period),
            "--dg-adaptive-period", str(cluster.config.adaptive_period),
            "--dg-idle-timeout", str(cluster.config.idle_timeout),
        ]

    def get_worker_command(self, cluster: Cluster, worker_name: str,
                           scheduler_address: str | None = None) -> list[str]:
        """Arguments of ``dask worker``, on ports from the node's worker range."""
        nthreads, memory_limit = self.worker_nthreads_memory_limit_args(cluster)
        return [
            scheduler_address or cluster.scheduler_address,
            "--host", "{host}", "--worker-port", "{port0}", "--nanny-port", "{port1}",
            "--no-dashboard", "--name", worker_name,
            "--nthreads", nthreads, "--memory-limit", memory_limit,
        ]

    def get_env(self, cluster: Cluster) -> dict[str, str]:
        """dask-gateway's variables and the platform's Dask config, for schedulers and
        workers alike (both env builders start from this), and where AWS is a stand-in,
        how to reach it (the pipeline reads and writes S3 from workers)."""
        return {**super().get_env(cluster), **dask_env(self.dask_config), **stand_in_env()}

    def get_worker_env(self, cluster: Cluster) -> dict[str, str]:
        """Plus the worker's spill cap: its share, by memory, of its node's spill disk."""
        env = super().get_worker_env(cluster)
        if self.spill_disk_per_memory:
            env.update(dask_env(max_spill_config(
                int(self.spill_disk_per_memory * cluster.config.worker_memory))))
        return env

    async def start_cluster(self, user: User, cluster_options: dict[str, Any]) -> str:
        """dask-gateway's, refusing (HTTP 422, with what to do) a cluster past the user's
        group limit on clusters held at once, so one user cannot fill the scheduler host."""
        async with self._submit_lock:  # two quick submits must not both slip under it
            options, config = await self.process_cluster_options(user, cluster_options)
            try:
                self.accounting.check_budget(config.platform_group)
            except BudgetExceeded as exc:
                raise PublicException(str(exc)) from None
            held = [c.name for c in self.db.active_clusters() if c.username == user.name]
            if config.max_clusters is not None and len(held) >= config.max_clusters:
                raise PublicException(
                    f"user {user.name} already holds {len(held)} cluster(s) "
                    f"({', '.join(sorted(held))}), the most a member of "
                    f"{config.platform_group} may hold at once "
                    f"(quotas.groups.{config.platform_group}.maxClusters = "
                    f"{config.max_clusters}); stop one first: cluster.shutdown(), or "
                    "gateway.stop_cluster(name) for one listed by gateway.list_clusters()")
            config.started_by = NOTEBOOK_TOKEN.get() or ""
            cluster = self.db.create_cluster(user.name, options, config.to_dict())
        self.log.info("Created cluster %s for user %s", cluster.name, user.name)
        trail().record("cluster.start", user.name, cluster=cluster.name,
                       group=config.platform_group, options=options,
                       from_notebook=bool(config.started_by))
        self.queue.put(cluster)
        return cluster.name

    async def do_start_cluster(self, cluster: Cluster) -> AsyncIterator[dict[str, Any]]:
        """Place the scheduler now, or queue it (by group priority) until the scheduler
        host has room; a queued cluster stays pending, with its place visible."""
        self._enqueue_cluster(cluster)
        placed = self._dispatch()
        mine = next((p for p in placed if p.request.key == cluster.name), None)
        self._start_launches([p for p in placed if p is not mine])
        if mine is None:
            self.log.info("Cluster %s waits for room on the scheduler host (%s)",
                          cluster.name, self._waiting_text(cluster.name))
            yield {"queued": True, "queued_at": time.time()}
            return
        node, state = self._reserve_placement(mine)
        yield state
        try:
            await self._spawn_scheduler(cluster, node, state)
        except NodeUnreachable as exc:
            self._set_aside(node, state, exc)
            self._requeue(cluster)

    async def do_stop_cluster(self, cluster: Cluster) -> None:
        trail().record("cluster.stop", cluster.username, cluster=cluster.name)
        await self._cancel_launch(cluster.name)
        self._waitlist.remove(cluster.name)
        await self._stop_process(cluster.state or {})
        self._start_launches(self._dispatch())

    async def do_check_clusters(self, clusters: list[Cluster]) -> list[bool]:
        """A pending cluster is fine while it waits for room; once placed, its scheduler
        must be alive and connect within cluster_connect_timeout."""
        return await self._check_placed([c.state or {} for c in clusters],
                                        self.cluster_connect_timeout)

    async def on_cluster_heartbeat(self, cluster_name: str, msg: dict[str, Any]) -> None:
        """dask-gateway's own, taking a started worker the heartbeat leaves out as closed
        (its handler answers 500 for one: heartbeats.py), and asking for no more workers
        than the user's group total allows: otherwise a scheduler that keeps asking has
        workers created and refused over and over."""
        cluster = self.db.get_cluster(cluster_name)
        if cluster is not None:
            msg = unlisted_as_closed(msg, cluster.workers.values())
            msg = {**msg, "count": min(msg["count"], self._workers_allowed(cluster))}
        await super().on_cluster_heartbeat(cluster_name, msg)
        if cluster is not None:
            self._record_start_latency(cluster)

    def _record_start_latency(self, cluster: Cluster) -> None:
        """Once per cluster (kept in its state, so a restart does not count it again):
        seconds from the request to the first worker the gateway saw running, to the
        log and the next metrics round (ClusterStartLatencySeconds)."""
        state = cluster.state or {}
        if "first_worker_at" in state or not any(
                w.status == JobStatus.RUNNING for w in cluster.workers.values()):
            return
        now = time.time()
        self.db.update_cluster(cluster, state={**state, "first_worker_at": now})
        latency = now - cluster.start_time / 1000
        group = cluster.config.platform_group
        self.log.info("Cluster %s (%s): first worker running %.1f s after the request",
                      cluster.name, group, latency)
        if self.metrics_namespace:
            self._start_latencies.append((group, latency))

    def _workers_allowed(self, cluster: Cluster) -> int:
        """Workers this cluster may have: those holding part of the user's total, plus as
        many more as the rest of the total takes."""
        cfg = cluster.config
        held = sum(1 for w in cluster.workers.values()
                   if w.status < JobStatus.STOPPED and self._ledger.holding(w.name))
        return held + quota_room(self._ledger.usage(cluster.username),
                                 (cfg.user_max_cores, cfg.user_max_memory), _worker_shape(cfg))

    # ------------------------------------------------------------------ what waits, and why

    def cluster_status(self, cluster: Cluster) -> dict[str, Any]:
        """A cluster's state as its owner is told: workers by state, what waits and why."""
        cfg = cluster.config
        workers = [w for w in cluster.workers.values() if w.status < JobStatus.STOPPED]
        positions = [p for w in workers if (p := self._waitlist.position(w.name))]
        position = self._waitlist.position(cluster.name)
        waiting = (waiting_text(position, cfg.platform_group) if position else
                   workers_waiting_text(positions, cfg.platform_group) if positions else None)
        version = (cluster.state or {}).get("runtime_version")
        if positions and version and not any(
                r.version == version for r in self._rooms() if r.role == "worker"):
            waiting = (f"{waiting}; no worker node runs this cluster's runtime {version} "
                       "any more (a roll-out moved the pool on): start a new cluster for "
                       "workers on the current version")
        running = sum(w.status == JobStatus.RUNNING for w in workers)
        return {"name": cluster.name, "user": cluster.username, "group": cfg.platform_group,
                "status": cluster.status.name,
                "runtime_version": (cluster.state or {}).get("runtime_version") or None,
                "workers": {"running": running, "waiting": len(positions),
                            "starting": len(workers) - running - len(positions)},
                "waiting": waiting}

    def _waiting_text(self, key: str) -> str:
        position = self._waitlist.position(key)
        return f"{position.place} of {position.total} in line" if position else "placed"

    async def get_cluster(self, cluster_name: str, wait: bool = False) -> Any:
        """dask-gateway's report, with what the cluster waits for (if anything) in its
        options: ``gateway.list_clusters()`` shows it as ``options["platform_status"]``."""
        return self._with_status(await super().get_cluster(cluster_name, wait))

    async def list_clusters(self, username: str | None = None,
                            statuses: list[Any] | None = None) -> list[Any]:
        return [self._with_status(m) for m in await super().list_clusters(username, statuses)]

    def _with_status(self, model: Any) -> Any:
        cluster = self.db.get_cluster(model.name) if model is not None else None
        if cluster is not None:
            waiting = self.cluster_status(cluster)["waiting"]
            if waiting:
                model.options = {**model.options, "platform_status": waiting}
        return model

    async def _status_route(self, request: web.Request) -> web.Response:
        """The caller's clusters (an admin's: everyone's) with what waits and why, and how
        much waits in the pool; docs/gateway.md, ``dask-platform status``."""
        user = request["user"]
        admin = user.admin
        clusters = [self.cluster_status(c) for c in self.db.active_clusters()
                    if admin or c.username == user.name]
        notebook = self.notebooks.get(user.name)
        return web.json_response({
            "user": user.name, "admin": admin, "clusters": clusters,
            "notebook": self.notebook_report(notebook) if notebook else None,
            "pool": {"waiting_clusters": len(self._waitlist.queues["scheduler"]),
                     "waiting_workers": len(self._waitlist.queues["worker"]),
                     "worker_nodes": sum(n.usable for n in self._nodes.values()
                                         if n.spec.role == "worker")},
            "runtime": self.runtime_status(admin)})

    @web.middleware
    async def _admins_list_all(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """GET /api/v1/clusters/ answered here: dask-gateway lists only the caller's own
        clusters, while admins see (and may stop) every cluster."""
        if request.method == "GET" and request.path == "/api/v1/clusters/":
            return await self._list_handler(request)
        return await handler(request)

    async def _list_route(self, request: web.Request) -> web.Response:
        user = request["user"]
        statuses = None
        if "status" in request.query:
            try:
                statuses = [ClusterStatus.from_name(k)
                            for k in request.query["status"].split(",")]
            except ValueError as exc:
                raise web.HTTPUnprocessableEntity(reason=str(exc)) from None
        clusters = await self.list_clusters(username=None if user.admin else user.name,
                                            statuses=statuses)
        return web.json_response({c.name: c.to_dict() for c in clusters})

    @web.middleware
    async def _explain_scale(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """A scale request that will not start every worker at once comes back with why
        (the dask_gateway client shows it as a warning)."""
        response = await handler(request)
        name = request.match_info.get("cluster_name")
        if (request.method != "POST" or not request.path.endswith("/scale") or name is None
                or response.status != 200 or not isinstance(response, web.Response)):
            return response
        cluster = self.db.get_cluster(name)
        count = (await request.json()).get("count")
        if cluster is None or not isinstance(count, int):
            return response
        trail().record("cluster.scale", cluster.username, cluster=name, count=count,
                       **_acting(request, cluster.username))
        cfg = cluster.config
        shape = _worker_shape(cfg)
        started = sum(1 for w in cluster.workers.values() if w.status < JobStatus.STOPPED)
        outlook = scale_outlook(
            min(count, cfg.cluster_max_workers or count) - started,
            self._workers_allowed(cluster) - started,
            fitting(self._rooms(), shape), len(self._waitlist.queues["worker"]),
            cfg.platform_group)
        if outlook is None:
            return response
        body = json.loads(response.body)
        body["msg"] = "; ".join(m for m in (body.get("msg"), outlook) if m)
        body["ok"] = False
        return web.json_response(body)

    # ------------------------------------------------------------------ workers

    async def do_start_worker(self, worker: Worker) -> AsyncIterator[dict[str, Any]]:
        cluster, cfg = worker.cluster, worker.cluster.config
        memory_gb = cfg.worker_memory / GIB
        try:
            self._check_fits_a_node(cfg.worker_cores, memory_gb)
            self._ledger.hold(worker.name, cluster.username, cfg.worker_cores,
                              cfg.worker_memory, cfg.user_max_cores, cfg.user_max_memory)
            try:
                self._enqueue(worker)
            except PendingCapExceeded:
                self._ledger.release(worker.name)
                raise
        except (UserQuotaExceeded, PendingCapExceeded, ValueError) as exc:
            yield {"capped": str(exc)}
            await self._cap(worker, str(exc))
            return
        placed = self._dispatch()
        mine = next((p for p in placed if p.request.key == worker.name), None)
        self._start_launches([p for p in placed if p is not mine])
        if mine is None:
            yield {"queued": True}
            return
        node, state = self._reserve_placement(mine)
        yield state
        try:
            await self._spawn_worker(worker, node, state)
        except NodeUnreachable as exc:
            self._set_aside(node, state, exc)
            self._requeue(worker)

    async def do_stop_worker(self, worker: Worker) -> None:
        await self._cancel_launch(worker.name)
        self._waitlist.remove(worker.name)
        self._ledger.release(worker.name)
        await self._stop_process(worker.state or {})
        self._start_launches(self._dispatch())

    async def do_check_workers(self, workers: list[Worker]) -> list[bool]:
        """dask-gateway asks only about workers that have not registered yet: one whose
        process is gone, or that was placed longer ago than worker_connect_timeout, has
        failed and is replaced."""
        return await self._check_placed([w.state or {} for w in workers],
                                        self.worker_connect_timeout)

    async def _check_placed(self, states: list[dict[str, Any]],
                            connect_timeout: float) -> list[bool]:
        alive = await self._check(states)
        deadline = time.time() - connect_timeout
        return [ok and state.get("placed_at", time.time()) >= deadline
                for state, ok in zip(states, alive)]

    def _check_fits_a_node(self, cores: float, memory_gb: float, what: str = "worker") -> None:
        """A process larger than every worker node would block the queue forever."""
        workers = [n for n in self._nodes.values() if n.spec.role == "worker" and n.known]
        if workers and not any(n.cores >= cores and n.memory_gb >= memory_gb
                               for n in workers):
            largest = max(workers, key=lambda n: (n.memory_gb, n.cores))
            raise ValueError(
                f"a {what} of {cores:g} cores and {memory_gb:g} GB is larger than any worker "
                f"node (largest offers {largest.cores:g} cores, {largest.memory_gb:g} GB)")

    def _set_aside(self, node: NodeState, state: dict[str, Any], exc: Exception) -> None:
        """A node that did not answer a start gets no more processes until it answers a
        health check; the request goes elsewhere instead of counting as a start failure
        (three of those would fail the whole cluster)."""
        self.log.warning("Node %s did not answer a start (%s); placing elsewhere",
                         node.spec.node_id, exc)
        node.set_aside = True
        node.reserved.pop(state["process_id"], None)

    def _enqueue(self, worker: Worker) -> None:
        """In line for a worker node on its scheduler's runtime version."""
        cfg = worker.cluster.config
        self._waitlist.push("worker", worker.name, worker.cluster.username, cfg.priority,
                            cfg.worker_cores, cfg.worker_memory / GIB, worker,
                            version=(worker.cluster.state or {}).get("runtime_version", ""))

    def _enqueue_cluster(self, cluster: Cluster) -> None:
        cfg = cluster.config
        self._waitlist.push("scheduler", cluster.name, cluster.username, cfg.priority,
                            cfg.scheduler_cores, cfg.scheduler_memory / GIB, cluster)

    def _requeue(self, item: Pooled) -> None:
        """Back in line after its node did not answer the start."""
        if isinstance(item, Notebook):
            item.state, item.status = {}, "waiting"
            self._enqueue_notebook(item)
        elif isinstance(item, Worker):
            self.db.update_worker(item, state={"queued": True})
            self._enqueue(item)
        else:
            self.db.update_cluster(item, state={"queued": True, "queued_at": time.time()})
            self._enqueue_cluster(item)
        self._start_launches(self._dispatch())

    async def _cancel_launch(self, key: str) -> None:
        launch = self._launches.pop(key, None)
        if launch is not None:
            await asyncio.gather(launch, return_exceptions=True)

    async def _cap(self, worker: Worker, reason: str) -> None:
        """Refuse one worker without failing its cluster.

        Raising from do_start_worker would count as a start failure, and three of those
        fail the whole cluster. Instead the scheduler is told to scale to the workers
        the user is allowed, and this worker is stopped as expected.
        """
        cluster = worker.cluster
        allowed = sum(1 for w in cluster.active_workers()
                      if "node_id" in (w.state or {}) or (w.state or {}).get("queued"))
        self._capped_total += 1
        self.log.warning("Worker %s of cluster %s (user %s) not started: %s. Scaling the "
                         "cluster to %d worker(s).", worker.name, cluster.name,
                         cluster.username, reason, allowed)
        self.db.update_worker(worker, target=JobStatus.STOPPED, close_expected=True)
        self.queue.put(worker)
        try:
            await self.session.post(
                cluster.api_address + "/api/comm", json={"op": "scale", "count": allowed},
                headers={"Authorization": f"token {cluster.token}"}, raise_for_status=True)
        except Exception as exc:  # the heartbeat caps it anyway; never fail the cluster
            self.log.warning("Could not tell cluster %s to scale to %d: %s", cluster.name,
                             allowed, exc)

    def _dispatch(self) -> list[Placement[Pooled]]:
        """Place what waits, schedulers and workers, in service order (waitlist.py)."""
        return self._waitlist.place({room.node_id: room for room in self._rooms()})

    def _reserve_placement(self, placement: Placement[Pooled]
                           ) -> tuple[NodeState, dict[str, Any]]:
        node, item = self._nodes[placement.node_id], placement.item
        process_id = (f"{item.name}-scheduler" if isinstance(item, Cluster)
                      else item.process_id if isinstance(item, Notebook)
                      else f"{item.cluster.name}-{item.name}")
        state = self._placement_state(node, process_id)
        node.reserved[process_id] = (placement.request.cores, placement.request.memory_gb)
        return node, state

    def _start_launches(self, placed: list[Placement[Pooled]]) -> None:
        """Start what waited in line (its do_start_* has returned): record where it went,
        then spawn it in the background."""
        for placement in placed:
            node, state = self._reserve_placement(placement)
            item = placement.item
            if isinstance(item, Worker):
                self.db.update_worker(item, state=state)
            elif isinstance(item, Notebook):
                item.state, item.status = state, "starting"
            else:
                self.db.update_cluster(item, state=state)
            self._launches[_key(item)] = asyncio.ensure_future(self._launch(item, node, state))

    async def _launch(self, item: Pooled, node: NodeState, state: dict[str, Any]) -> None:
        try:
            if isinstance(item, Worker):
                await self._spawn_worker(item, node, state)
            elif isinstance(item, Notebook):
                await self._spawn_notebook(item, node, state)
            else:
                await self._spawn_scheduler(item, node, state)
        except NodeUnreachable as exc:
            self._set_aside(node, state, exc)
            self._requeue(item)
        except Exception as exc:
            self.log.warning("%s failed to start on %s: %s", _key(item), node.spec.node_id,
                             exc)
            if isinstance(item, Notebook):
                node.reserved.pop(item.process_id, None)
                item.status, item.message = "failed", f"the notebook server did not start: {exc}"
            elif isinstance(item, Worker):
                self.db.update_worker(item, target=JobStatus.FAILED)
                self.queue.put(item)
            else:
                self.db.update_cluster(item, target=JobStatus.FAILED)
                self.queue.put(item)
        finally:
            self._launches.pop(_key(item), None)

    async def _spawn_scheduler(self, cluster: Cluster, node: NodeState,
                               state: dict[str, Any]) -> None:
        cfg = cluster.config
        await node.client.spawn(self._spawn_spec(
            state["process_id"], "scheduler", self.get_scheduler_command(cluster),
            self.get_scheduler_env(cluster), cluster, cfg.scheduler_cores,
            cfg.scheduler_memory / GIB, cpu_limit=cfg.scheduler_cpu_limit,
            memory_limit_gb=(cfg.scheduler_memory_limit / GIB
                             if cfg.scheduler_memory_limit else None)))
        self.accounting.ledger.start(state["process_id"], node.spec.node_id, cluster.username,
                                     cfg.platform_group, cluster.name, "scheduler",
                                     cfg.scheduler_cores, cfg.scheduler_memory / GIB)

    async def _spawn_worker(self, worker: Worker, node: NodeState,
                            state: dict[str, Any]) -> None:
        cluster, cfg = worker.cluster, worker.cluster.config
        if self._protection is not None:
            await self._protection.set_busy(node.spec.node_id, True)
        await node.client.spawn(self._spawn_spec(
            state["process_id"], "worker", self.get_worker_command(cluster, worker.name),
            self.get_worker_env(cluster), cluster, cfg.worker_cores,
            cfg.worker_memory / GIB, worker=worker.name))
        self.accounting.ledger.start(state["process_id"], node.spec.node_id, cluster.username,
                                     cfg.platform_group, cluster.name, "worker",
                                     cfg.worker_cores, cfg.worker_memory / GIB)

    # ------------------------------------------------------------------ notebooks

    async def start_notebook(self, user: User, env: dict[str, str],
                             token_hash: str | None) -> Notebook:
        """Queue the user's JupyterLab server for a worker node, sized by their group."""
        async with self._submit_lock:
            current = self.notebooks.get(user.name)
            if current is not None and current.live:
                raise web.HTTPConflict(
                    reason=f"user {user.name} already has a notebook server "
                           f"({current.status}); stop it first (File > Hub Control Panel "
                           "> Stop My Server)")
            try:
                _, config = await self.process_cluster_options(user, {})
                notebook = Notebook(
                    process_id=f"notebook-{user.name}-{secrets.token_hex(4)}",
                    user=user.name, group=config.platform_group, priority=config.priority,
                    cores=config.notebook_cores, memory_gb=config.notebook_memory / GIB,
                    run_as=_run_as(user.name, config), env=env, token_hash=token_hash)
                self._check_fits_a_node(notebook.cores, notebook.memory_gb, "notebook server")
                self._enqueue_notebook(notebook)
            except (PublicException, ValueError, PendingCapExceeded) as exc:
                raise web.HTTPUnprocessableEntity(reason=str(exc)) from None
            self.notebooks[user.name] = notebook
        trail().record("notebook.start", user.name, server=notebook.process_id,
                       cores=notebook.cores, memory_gb=notebook.memory_gb)
        self.log.info("Notebook server %s of %s queued (%g cores, %g GB)",
                      notebook.process_id, user.name, notebook.cores, notebook.memory_gb)
        self._start_launches(self._dispatch())
        return notebook

    async def refresh_notebook(self, notebook: Notebook) -> None:
        """A starting server's state straight from its agent: the spawner polls for it,
        and the user waits on the hub's progress page meanwhile."""
        node = self._nodes.get(notebook.state.get("node_id", ""))
        if notebook.status != "starting" or node is None or \
                notebook.process_id in self._launches:
            return
        try:
            self._observe_notebooks(node, await node.client.processes())
        except (NodeUnreachable, NodeAgentError):
            pass  # the node loop decides when a node is lost

    def notebook_report(self, notebook: Notebook) -> dict[str, Any]:
        position = self._waitlist.position(notebook.process_id)
        return notebook.report(waiting_text(position, notebook.group) if position else None)

    async def stop_notebook(self, username: str, reason: str) -> None:
        """Stop the user's server (waiting or running), then the clusters it started."""
        notebook = self.notebooks.get(username)
        if notebook is None or not notebook.live:
            return
        notebook.status, notebook.message = "stopped", reason
        trail().record("notebook.stop", username, server=notebook.process_id, reason=reason)
        self._waitlist.remove(notebook.process_id)
        await self._cancel_launch(notebook.process_id)
        await self._stop_process(notebook.state)
        await self._stop_clusters_of(notebook)

    async def _stop_clusters_of(self, notebook: Notebook) -> None:
        if notebook.token_hash is None:
            return
        for cluster in self.db.active_clusters():
            if cluster.username == notebook.user and \
                    cluster.config.started_by == notebook.token_hash:
                self.log.info("Stopping cluster %s: the notebook server that started it "
                              "(%s) has stopped", cluster.name, notebook.process_id)
                await self.stop_cluster(cluster.name)

    def _enqueue_notebook(self, notebook: Notebook) -> None:
        """In the worker nodes' line, by group priority, with workers."""
        self._waitlist.push("worker", notebook.process_id, notebook.user, notebook.priority,
                            notebook.cores, notebook.memory_gb, notebook)

    async def _spawn_notebook(self, notebook: Notebook, node: NodeState,
                              state: dict[str, Any]) -> None:
        if self._protection is not None:
            await self._protection.set_busy(node.spec.node_id, True)
        prefix = notebook.env.get("JUPYTERHUB_SERVICE_PREFIX", "/")
        record = await node.client.spawn({
            "id": notebook.process_id, "kind": "notebook", "argv": SINGLEUSER_ARGS,
            "env": {**notebook.env,
                    "JUPYTERHUB_SERVICE_URL": f"http://{{host}}:{{port0}}{prefix}"},
            "cores": notebook.cores, "memory_gb": notebook.memory_gb,
            "run_as": notebook.run_as,
            "labels": {"user": notebook.user, "notebook": notebook.token_hash or ""}})
        notebook.url = _process_url(node, record["ports"][0])
        self.accounting.ledger.start(notebook.process_id, node.spec.node_id, notebook.user,
                                     notebook.group, "", "notebook", notebook.cores,
                                     notebook.memory_gb)

    def _observe_notebooks(self, node: NodeState, processes: list[dict[str, Any]]) -> None:
        """Notebook servers as the node's agent lists them: running once they listen,
        ended (and their clusters stopped) once gone; servers a restarted gateway does
        not know are taken back from the agent's labels."""
        listed = {p["id"]: p for p in processes if p.get("kind") == "notebook"}
        for notebook in list(self.notebooks.values()):
            if notebook.state.get("node_id") != node.spec.node_id or \
                    notebook.status not in ("starting", "running") or \
                    notebook.process_id in self._launches:
                continue
            process = listed.get(notebook.process_id)
            if process is None or process["state"] not in ALIVE:
                node.reserved.pop(notebook.process_id, None)
                self._spawn_task(self._notebook_ended(notebook, process))
            elif process["state"] == "running":
                notebook.status = "running"
        for process in listed.values():
            user = process.get("labels", {}).get("user", "")
            known = self.notebooks.get(user)
            if process["state"] in ALIVE and user and (known is None or not known.live):
                self.notebooks[user] = Notebook.adopted(process, self._placement_state(
                    node, process["id"]), _process_url(node, process["ports"][0]))
                node.reserved[process["id"]] = (process["cores"], process["memory_gb"])
                self.log.info("Notebook server %s of %s taken back from node %s",
                              process["id"], user, node.spec.node_id)

    async def _notebook_ended(self, notebook: Notebook, process: dict[str, Any] | None) -> None:
        code = (process or {}).get("exit_code")
        notebook.status = "failed" if code not in (0, None) else "stopped"
        notebook.message = (f"the notebook server exited with code {code}" if code not in
                            (0, None) else "the notebook server has ended")
        self.log.info("Notebook server %s of %s ended (%s)", notebook.process_id,
                      notebook.user, notebook.message)
        await self._stop_clusters_of(notebook)

    # ------------------------------------------------------------------ shared helpers

    def _rooms(self) -> list[NodeRoom]:
        """Where a process may go now: usable nodes a roll-out is not draining."""
        return [node.room() for node in self._nodes.values()
                if node.usable and not self._draining(node)]

    def _draining(self, node: NodeState) -> bool:
        """A roll-out drains it, or an admin did (``dask-platform admin drain``)."""
        return node.spec.node_id in self._drained or (
            self._rollout is not None and self._rollout.draining(node.spec.node_id))

    @staticmethod
    def _placement_state(node: NodeState, process_id: str) -> dict[str, Any]:
        """The checkpoint a later stop (maybe by a restarted gateway) reads back, and the
        runtime version the process runs (a cluster's workers must run its scheduler's)."""
        return {"node_id": node.spec.node_id, "role": node.spec.role,
                "agent_url": node.spec.agent_url, "process_id": process_id,
                "placed_at": time.time(), "runtime_version": node.version}

    @staticmethod
    def _spawn_spec(process_id: str, kind: str, argv: list[str], env: dict[str, str],
                    cluster: Cluster, cores: float, memory_gb: float,
                    cpu_limit: float | None = None, memory_limit_gb: float | None = None,
                    **labels: str) -> dict[str, Any]:
        return {
            "id": process_id, "kind": kind, "argv": argv, "env": env,
            "files": {"dask.crt": cluster.tls_cert.decode(),
                      "dask.pem": cluster.tls_key.decode()},
            "cores": cores, "memory_gb": memory_gb,
            "cpu_limit": cpu_limit, "memory_limit_gb": memory_limit_gb,
            "run_as": _run_as(cluster.username, cluster.config),
            "labels": {"cluster": cluster.name, "user": cluster.username, **labels},
        }

    async def _stop_process(self, state: dict[str, Any]) -> None:
        """Stop a placed process. Its room is free at once (a create right after a delete
        must not be refused): the agent no longer counts a process it is stopping."""
        if "node_id" not in state:
            return
        node = self._add_node(NodeSpec(state["node_id"], state["role"], state["agent_url"]))
        node.reserved.pop(state["process_id"], None)
        node.stopping.add(state["process_id"])
        self.accounting.ledger.stop(state["process_id"])
        self._start_launches(self._dispatch())
        try:
            if not node.lost:
                await node.client.stop(state["process_id"], self.stop_grace)
        except NodeAgentError as exc:
            if exc.status != 404:
                raise
        except NodeUnreachable as exc:
            self.log.warning("Node %s unreachable while stopping %s: %s",
                             node.spec.node_id, state["process_id"], exc)
        finally:
            node.stopping.discard(state["process_id"])
        await self._update_protection(node)

    async def _check(self, states: list[dict[str, Any]]) -> list[bool]:
        """One ``processes()`` call per node for the whole batch."""
        by_node: dict[str, list[int]] = defaultdict(list)
        results = [True] * len(states)
        for index, state in enumerate(states):
            if "node_id" in state:
                by_node[state["node_id"]].append(index)

        async def check_node(node_id: str, indexes: list[int]) -> None:
            node = self._nodes.get(node_id)
            if node is None or node.lost:
                for i in indexes:
                    results[i] = False
                return
            try:
                listing = {p["id"]: p for p in await node.client.processes()}
            except NodeUnreachable:
                return  # the node loop decides when a node is lost
            for i in indexes:
                process = listing.get(states[i]["process_id"])
                results[i] = process is not None and process["state"] in ALIVE

        await asyncio.gather(*(check_node(n, ix) for n, ix in by_node.items()))
        return results

    # ------------------------------------------------------------------ node health

    async def _node_loop(self) -> None:
        last_listing = -float("inf")
        loop = asyncio.get_running_loop()
        while True:
            try:
                discovers = self.asg_name or self.stack_name
                if discovers and loop.time() - last_listing >= self.directory_refresh_period:
                    last_listing = loop.time()
                    await self._refresh_directory()
                await asyncio.gather(*(self._poll(n) for n in list(self._nodes.values())))
                await self._rollout_round()
                self._start_launches(self._dispatch())
            except asyncio.CancelledError:
                raise
            except Exception:
                self.log.warning("Node health round failed", exc_info=True)
            self._ready.set()
            await asyncio.sleep(self.node_check_period)

    async def _refresh_directory(self) -> None:
        specs: list[NodeSpec] = []
        if self.asg_name:
            specs += await asyncio.to_thread(asg_worker_nodes, self.asg_name,
                                             self.agent_port, self.agent_scheme)
        if self.stack_name:
            specs += await asyncio.to_thread(tagged_scheduler_nodes, self.stack_name,
                                             self.agent_port, self.agent_scheme)
        listed = {spec.node_id for spec in specs} | self._static_ids
        for spec in specs:
            self._add_node(spec)
        for node_id in [n for n, node in self._nodes.items()
                        if n not in listed and not node.reserved]:
            await self._nodes.pop(node_id).client.close()
        if self._protection is not None:
            await self._protection.refresh()

    async def _poll(self, node: NodeState) -> None:
        try:
            capacity = await node.client.capacity()  # its version changes with an upgrade
            node.cores, node.memory_gb = capacity["cores"], capacity["memory_gb"]
            node.version = str(capacity.get("runtime_version") or "")
            node.upgrade = capacity.get("upgrade")
            asked = time.time()
            processes = await node.client.processes()
        except (NodeUnreachable, NodeAgentError) as exc:
            node.failures += 1
            if node.failures >= self.node_lost_after and not node.lost and node.known:
                self._lose(node, exc)
            return
        if node.lost:
            self.log.info("Node %s is reachable again", node.spec.node_id)
        node.failures, node.known, node.lost, node.set_aside = 0, True, False, False
        alive = [p for p in processes if p["state"] in ALIVE]
        node.alive_processes = len(alive)  # protected from scale-in until they are gone
        staying = [p for p in alive if not p.get("stopping") and p["id"] not in node.stopping]
        node.agent_used = (sum(p["cores"] for p in staying),
                           sum(p["memory_gb"] for p in staying))
        self._observe_notebooks(node, processes)
        # Ended on their own (exited, killed): their intervals end now. Only those opened
        # before this listing was asked for: a start may have landed meanwhile.
        for process_id in self.accounting.ledger.open_on(node.spec.node_id, asked) - {
                p["id"] for p in alive}:
            self.accounting.ledger.stop(process_id)
        node.holders = sorted({p.get("labels", {}).get("user", "?") for p in alive})
        self._reconcile(node, alive)
        await self._update_protection(node)

    # ------------------------------------------------------------------ reconcile

    def _reconcile(self, node: NodeState, alive: list[dict[str, Any]]) -> None:
        """Compare what runs on ``node`` with this gateway's records, logging each
        decision: records found running are re-adopted; a Dask process no record explains
        (its gateway's database was lost) is stopped after ``orphan_grace``, unless a
        record claims it meanwhile."""
        node_id, now = node.spec.node_id, time.time()
        listed = {p["id"]: p for p in alive}
        if not node.reconciled:
            node.reconciled = True
            for process_id in node.reserved:
                if process_id in listed:
                    self.log.info("Reconcile: %s runs on node %s as recorded: re-adopted",
                                  process_id, node_id)
                else:
                    self.log.warning("Reconcile: %s is recorded on node %s but does not run "
                                     "there (yet?); the cluster checks replace or fail it",
                                     process_id, node_id)
        claimed = set(node.reserved) | node.stopping
        for process_id, process in listed.items():
            key = (node_id, process_id)
            labels = process.get("labels") or {}
            if (process_id in claimed or process.get("kind") not in DASK_KINDS
                    or "cluster" not in labels):
                if self._orphans.pop(key, None) is not None:
                    self.log.info("Reconcile: %s on node %s is claimed by a record now; "
                                  "kept", process_id, node_id)
                continue
            first = self._orphans.setdefault(key, now)
            if first == now:
                self.log.warning(
                    "Reconcile: %s on node %s (%s of cluster %s, user %s) is in no record "
                    "of this gateway (a lost database?); stopping it in %gs unless a "
                    "record claims it", process_id, node_id, process.get("kind"),
                    labels.get("cluster"), labels.get("user"), self.orphan_grace)
            elif now - first >= self.orphan_grace and not process.get("stopping"):
                self.log.warning("Reconcile: stopping orphan %s on node %s (unclaimed for "
                                 "%.0fs)", process_id, node_id, now - first)
                self._spawn_task(self._stop_orphan(node, process_id))
        for key in [k for k in self._orphans if k[0] == node_id and k[1] not in listed]:
            del self._orphans[key]
            self.log.info("Reconcile: orphan %s on node %s has ended", key[1], node_id)

    async def _stop_orphan(self, node: NodeState, process_id: str) -> None:
        try:
            await node.client.stop(process_id, self.stop_grace)
            self.log.info("Reconcile: orphan %s on node %s stopped", process_id,
                          node.spec.node_id)
        except (NodeUnreachable, NodeAgentError) as exc:
            self.log.warning("Reconcile: could not stop orphan %s on node %s (%s); "
                             "trying again next round", process_id, node.spec.node_id, exc)

    def _spawn_task(self, coro: Any) -> None:
        """Run ``coro`` in the background; cancelled at cleanup."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _lose(self, node: NodeState, exc: Exception) -> None:
        """Mark everything on a lost node failed, so the gateway replaces the workers."""
        node.lost = True
        node_id = node.spec.node_id
        for process_id in self.accounting.ledger.open_on(node_id):
            self.accounting.ledger.stop(process_id)
        self.log.warning("Node %s lost after %d failed checks (%s); failing its processes",
                         node_id, node.failures, exc)
        for cluster in self.db.active_clusters():
            if (cluster.state or {}).get("node_id") == node_id:
                self.db.update_cluster(cluster, target=JobStatus.FAILED)
                self.queue.put(cluster)
            for worker in cluster.active_workers():
                if (worker.state or {}).get("node_id") == node_id:
                    self.db.update_worker(worker, target=JobStatus.FAILED)
                    self.queue.put(worker)

    async def _update_protection(self, node: NodeState) -> None:
        if self._protection is None or node.spec.role != "worker":
            return
        try:
            await self._protection.set_busy(node.spec.node_id, node.busy)
        except Exception:
            self.log.warning("Could not update scale-in protection of %s", node.spec.node_id,
                             exc_info=True)

    # ------------------------------------------------------------------ roll-outs

    async def _rollout_round(self) -> None:
        """One step of the roll-out under way (rollout.py): drain, ask nodes to upgrade,
        and once no node is left to wait for, upgrade this gateway."""
        rollout = self._rollout
        if rollout is None or rollout.finished_at:
            return
        views = [NodeView(n.spec.node_id, n.spec.role, n.version, n.busy, n.holders,
                          n.upgrade)
                 for n in self._nodes.values() if n.known and not n.lost]
        for node_id in rollout.step(views):
            node = self._nodes[node_id]
            self.log.info("Roll-out: node %s (%s) is on %s and holds no work it would "
                          "lose: asking it to upgrade in place to %s", node_id,
                          node.spec.role, node.version, rollout.version)
            try:
                await node.client.upgrade(rollout.version)
            except (NodeUnreachable, NodeAgentError) as exc:
                self.log.warning("Roll-out: node %s did not take the upgrade (%s); asking "
                                 "again later", node_id, exc)
        if rollout.nodes_settled():
            rollout.finish(self._version)
            if rollout.gateway.get("state") not in ("done", "upgrading", "failed"):
                rollout.gateway["state"] = "upgrading"
                self._spawn_task(self._upgrade_self(rollout))
        self._save_rollout()

    async def _upgrade_self(self, rollout: Rollout) -> None:
        """The last step: install the version on this host, then stop; the gateway's
        supervisor starts it again from it, with the same durable database."""
        self.log.info("Roll-out: every node is settled; upgrading the gateway from %s to "
                      "%s", self._version, rollout.version)
        ok, said = await upgrade_in_background(rollout.version)
        rollout.gateway.update(state="installed" if ok else "failed", message=said)
        self._save_rollout()
        if ok:
            self.log.info("Roll-out: runtime %s installed; restarting the gateway from it "
                          "(clusters keep running)", rollout.version)
            os.kill(os.getpid(), signal.SIGTERM)
        else:
            self.log.warning("Roll-out: the gateway's upgrade failed: %s", said)

    def _save_rollout(self) -> None:
        if self._rollout is not None and self._rollout_path is not None:
            self._rollout.save(self._rollout_path)

    async def _rollout_route(self, request: web.Request) -> web.Response:
        """The roll-out under way or last finished: each host's step (rollout.py)."""
        if self._rollout is None:
            return web.json_response({"error": "no roll-out has run on this gateway"},
                                     status=404)
        return web.json_response(self._rollout.report())

    async def _start_rollout_route(self, request: web.Request) -> web.Response:
        """Admins: bring every host to ``version`` (default: the runtimeVersion the stack
        last published in the settings)."""
        if not request["user"].admin:
            return web.json_response({"error": "only members of the admins group may roll "
                                               "out a runtime version"}, status=403)
        version = (await checked_body(request, StartRollout, StartRollout())).version
        problem = None
        if self._rollout_path is None:
            problem = "this gateway keeps no state directory, so it cannot roll out"
        elif version is None and not self.settings_source:
            problem = "give the version: this gateway reads no published settings"
        if problem:
            return web.json_response({"error": problem}, status=409)
        if version is None:
            settings = await asyncio.to_thread(load_runtime_settings, self.settings_source)
            version = settings.runtime_version
            if not version:
                return web.json_response({"error": f"{self.settings_source} names no "
                                                   "runtimeVersion; `pulumi up` publishes "
                                                   "it"}, status=409)
        current = self._rollout
        if current is not None and not current.finished_at:
            if current.version == version:
                return web.json_response(current.report())
            return web.json_response(
                {"error": f"a roll-out to {current.version} is under way "
                          f"({current.report()['counts']}); wait for it to finish "
                          "(dask-platform rollout --watch)"}, status=409)
        self._rollout = Rollout(version, time.time(), self.drain_seconds)
        self.log.info("Roll-out: %s asked for runtime %s (gateway on %s)",
                      request["user"].name, version, self._version)
        self._save_rollout()
        return web.json_response(self._rollout.report(), status=202)

    def runtime_status(self, admin: bool) -> dict[str, Any]:
        """Which runtime versions run where; mixed versions during a roll-out."""
        versions: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for node in self._nodes.values():
            if node.known and not node.lost:
                versions[node.version or "unknown"][node.spec.role] += 1
        rollout = self._rollout
        found: dict[str, Any] = {
            "gateway": self._version,
            "nodes": {v: dict(roles) for v, roles in sorted(versions.items())},
            "mixed": len(set(versions) | {self._version}) > 1,
            "rollout": None if rollout is None else {
                "version": rollout.version, "done": rollout.finished_at is not None,
                "counts": rollout.report()["counts"]},
        }
        if admin:
            found["node_list"] = [
                {"node_id": n.spec.node_id, "role": n.spec.role, "version": n.version,
                 "draining": self._draining(n), "processes": n.alive_processes}
                for n in self._nodes.values() if n.known and not n.lost]
        return found

    # ------------------------------------------------------------------ admin (admin.py)

    def set_drained(self, node_id: str, drained: bool) -> bool:
        """Drain (no new processes) or undrain a node; False if there is no such node."""
        if node_id not in self._nodes:
            return False
        (self._drained.add if drained else self._drained.discard)(node_id)
        if self._drained_path is not None:
            self._drained_path.write_text(json.dumps(sorted(self._drained)))
        self.log.info("Node %s %s", node_id, "drained" if drained else "undrained")
        if not drained:
            self._start_launches(self._dispatch())
        return True

    def waiting(self) -> list[dict[str, Any]]:
        """What waits for room, per role in service order."""
        found = []
        for role, queue in self._waitlist.queues.items():
            ordered = queue.ordered()
            for place, request in enumerate(ordered, start=1):
                found.append({"role": role, "place": place, "of": len(ordered),
                              "key": request.key, "user": request.user,
                              "priority": request.priority, "cores": request.cores,
                              "memory_gb": request.memory_gb})
        return found

    def node_loads(self) -> list[dict[str, Any]]:
        loads = []
        for node in sorted(self._nodes.values(), key=lambda n: (n.spec.role, n.spec.node_id)):
            room = node.room()
            loads.append({"node_id": node.spec.node_id, "role": node.spec.role,
                          "cores": node.cores, "memory_gb": node.memory_gb,
                          "free_cores": round(room.free_cores, 3),
                          "free_memory_gb": round(room.free_memory_gb, 3),
                          "processes": node.alive_processes, "users": node.holders,
                          "drained": node.spec.node_id in self._drained,
                          "draining": self._draining(node), "lost": node.lost,
                          "runtime_version": node.version})
        return loads

    async def idle_seconds(self) -> dict[str, float | None]:
        """Running cluster -> seconds its scheduler has had no work (None: unknown)."""
        clusters = [c for c in self._running_clusters() if c.dashboard_address]
        readings = await self._read_schedulers(clusters)
        return {c.name: (r.idle_seconds if r is not None else None)
                for c, r in zip(clusters, readings)}

    async def stop_everything_of(self, username: str, reason: str) -> dict[str, Any]:
        """Offboarding: the user's clusters and notebook server, stopped."""
        clusters = [c.name for c in self.db.active_clusters() if c.username == username]
        for name in clusters:
            await self.stop_cluster(name)
        notebook = self.notebooks.get(username)
        had_notebook = notebook is not None and notebook.live
        await self.stop_notebook(username, reason)
        return {"clusters_stopped": clusters, "notebook_stopped": had_notebook}

    async def _usage_loop(self) -> None:
        while True:
            await asyncio.sleep(self.usage_period)
            try:
                await asyncio.to_thread(self.accounting.round)
            except asyncio.CancelledError:
                raise
            except Exception:
                self.log.warning("Usage round failed", exc_info=True)

    # ------------------------------------------------------------------ metrics

    def metrics(self) -> dict[str, Any]:
        """Pool figures for scale-out and dashboards."""
        return {
            "pending_workers": len(self._waitlist.queues["worker"]),
            "pending_clusters": len(self._waitlist.queues["scheduler"]),
            "capped_workers_total": self._capped_total,
            "nodes": [
                {"node_id": n.spec.node_id, "role": n.spec.role, "lost": n.lost,
                 "runtime_version": n.version, "draining": self._draining(n),
                 "free_cores": n.room().free_cores, "free_memory_gb": n.room().free_memory_gb,
                 "processes": len(n.reserved)}
                for n in self._nodes.values()
            ],
        }

    async def _pool_route(self, request: web.Request) -> web.Response:
        return web.json_response(self.metrics())

    async def _workers_route(self, request: web.Request) -> web.Response:
        """Each running worker's memory, read from its scheduler now."""
        readings = await self._read_schedulers(self._running_clusters())
        return web.json_response({"workers": [asdict(w) for w in worker_memory(readings)]})

    def _running_clusters(self) -> list[Cluster]:
        return [c for c in self.db.active_clusters() if c.status == JobStatus.RUNNING]

    async def _read_schedulers(self,
                               clusters: list[Cluster]) -> list[SchedulerReading | None]:
        return await read_schedulers(
            self.session, {c.name: c.dashboard_address for c in clusters if c.dashboard_address},
            self.metrics_scrape_timeout, self.log)

    async def _figures(self) -> PoolFigures:
        """Clusters and workers the gateway has seen running (heartbeats), the tasks
        their schedulers hold for want of a worker, and each worker's memory."""
        running = self._running_clusters()
        readings = await self._read_schedulers(running)
        waiting = self._waitlist.waiting("worker")
        workers = [n for n in self._nodes.values() if n.spec.role == "worker" and n.usable]
        offered = sum(n.memory_gb for n in workers)
        placed = sum(m for n in workers for _, m in n.reserved.values())
        latencies, self._start_latencies = tuple(self._start_latencies), []
        return PoolFigures(
            active_clusters=len(running),
            active_workers=sum(w.status == JobStatus.RUNNING
                               for c in running for w in c.active_workers()),
            pending_workers=len(waiting),
            queued_tasks=queued_tasks(readings),
            workers=worker_memory(readings),
            backlog_nodes=backlog_nodes([(r.cores, r.memory_gb) for r in waiting],
                                        NodeShape(*self.worker_node)),
            idle_nodes=sum(not n.busy for n in workers),
            memory_reserved_percent=100 * placed / offered if offered else None,
            start_latencies=latencies,
        )

    async def _metrics_loop(self) -> None:
        publisher = CloudWatchPublisher(self.metrics_namespace, self.asg_name)
        while True:
            try:
                await publisher.publish(await self._figures())
            except asyncio.CancelledError:
                raise
            except Exception:
                self.log.warning("Could not publish pool metrics", exc_info=True)
            await asyncio.sleep(self.metrics_period)


def _hub_login(app: web.Application, prefix: str) -> HubLogin | None:
    """JupyterHub's OAuth for dashboards, where the authenticator takes hub tokens."""
    auth = app["authenticator"]
    if not getattr(auth, "hub_enabled", False):
        return None
    return HubLogin(auth.jupyterhub_api_url, auth.jupyterhub_service_name,
                    auth.jupyterhub_api_token, prefix)


def _run_as(username: str, cfg: PoolClusterConfig) -> dict[str, Any] | None:
    """The user the agent starts the user's processes as, if the config names one."""
    if cfg.platform_uid is None or cfg.platform_gid is None:
        return None
    return {"name": username, "uid": cfg.platform_uid, "gid": cfg.platform_gid}


def _acting(request: web.Request, owner: str) -> dict[str, str]:
    """``by``: who acted, where it was not the owner (an admin)."""
    user = request.get("user")
    return {"by": user.name} if user is not None and user.name != owner else {}


def _key(item: Pooled) -> str:
    """The waitlist and launch key of what is placed."""
    return item.process_id if isinstance(item, Notebook) else item.name


def _process_url(node: NodeState, port: int) -> str:
    """A process's HTTP address: its node's (processes listen where the agent does)."""
    return f"http://{urlsplit(node.spec.agent_url).hostname}:{port}"


NOTEBOOK_TOKEN: ContextVar[str | None] = ContextVar("notebook_token", default=None)
"""The hub token hash of the request creating a cluster (notebooks.py)."""


@web.middleware
async def _remember_notebook_token(request: web.Request, handler: Any) -> web.StreamResponse:
    """A cluster created with a notebook's hub token stops with that notebook."""
    if request.method == "POST" and request.path == "/api/v1/clusters/":
        NOTEBOOK_TOKEN.set(token_hash(request))
    return await handler(request)


def _worker_shape(cfg: PoolClusterConfig) -> Shape:
    return Shape(cfg.worker_cores, cfg.worker_memory / GIB)


def static_nodes(specs: Iterable[NodeSpec]) -> list[dict[str, str]]:
    """``PoolBackend.nodes`` config value for a list of nodes."""
    return [spec.to_dict() for spec in specs]
