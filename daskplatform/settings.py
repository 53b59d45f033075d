"""The one settings schema, shared by the cloud layer and the runtime.

Stack config (``dask-platform:<key>``) is validated into :class:`PlatformSettings`
before any resource is registered. The part the hosts need at run time
(:class:`RuntimeSettings`) is published by the stack as an SSM parameter and read
back by the gateway and the node agents; local mode reads it from
``Pulumi.dev.yaml`` so both modes share one source.

Every default is written once, here, with its meaning. Cross-field rules are pure
functions (``check_*``) so they can be tested directly; each raises
:class:`SettingsError` naming the config key and what is allowed.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from itertools import pairwise
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

CONFIG_NAMESPACE = "dask-platform"

PLATFORM_GROUPS = ("admins", "data_engineers", "data_analysts")
"""Platform groups, highest priority first by default."""

GATEWAY_SERVICE = "dask-gateway"
"""The gateway's name as a JupyterHub service (its token scope is
access:services!service=...)."""
SERVICE_PREFIX = f"/services/{GATEWAY_SERVICE}"
"""Where the hub's proxy routes to the gateway; the proxy keeps the path, so the gateway
serves under it (``dask-platform gateway --prefix``). The ``gateway_url`` stack output is
the ALB's URL plus this."""

BUCKET_KINDS = ("raw", "processed", "audit", "artifacts")
"""The platform's S3 buckets (DESIGN.md, Data), created by the stack and by local mode."""


class SettingsError(ValueError):
    """Invalid settings; the message names each offending key and what is allowed."""


def config_key(*parts: str) -> str:
    """The user-facing name of a setting, e.g. ``dask-platform:workers.min``."""
    return f"{CONFIG_NAMESPACE}:" + ".".join(parts)


class _Model(BaseModel):
    """Config keys are camelCase; unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


# --------------------------------------------------------------------------- hosts

ROOT_VOLUME_GIB = 30
"""Every host's root volume (gp3): the OS, the runtime, logs and, on worker nodes, the
Dask workers' spill files (``clusters.nodeSpillDiskGb``)."""
SYSTEM_DISK_GIB = 8
"""Of the root volume, what spilling never takes: Amazon Linux, the runtime's virtualenv,
the agent's state and logs."""

_SIZE_VCPUS = {"large": 2, "xlarge": 4, "2xlarge": 8, "4xlarge": 16, "8xlarge": 32}
_FAMILY_GIB_PER_VCPU = {
    "c5": 2, "c6i": 2, "c7i": 2, "c6a": 2, "c7a": 2,
    "m5": 4, "m6i": 4, "m7i": 4, "m6a": 4, "m7a": 4,
    "r5": 8, "r6i": 8, "r7i": 8,
}
_BURSTABLE = {  # t3: (vCPUs, GiB)
    "t3.medium": (2, 4), "t3.large": (2, 8), "t3.xlarge": (4, 16), "t3.2xlarge": (8, 32)
}
INSTANCE_SHAPES: dict[str, tuple[int, int]] = {
    **_BURSTABLE,
    **{
        f"{family}.{size}": (vcpus, vcpus * gib)
        for family, gib in _FAMILY_GIB_PER_VCPU.items()
        for size, vcpus in _SIZE_VCPUS.items()
    },
}
"""Instance types the platform knows: type -> (vCPUs, memory GiB). Quota checks need
the shape, so an unknown type is an error rather than a guess."""


def _check_instance_type(value: str) -> str:
    if value not in INSTANCE_SHAPES:
        families = sorted({t.split(".")[0] for t in INSTANCE_SHAPES})
        raise ValueError(
            f"unknown instance type {value!r}; allowed families {', '.join(families)} "
            f"in sizes {', '.join(_SIZE_VCPUS)} (t3: medium..2xlarge)"
        )
    return value


class HostSettings(_Model):
    """A single host (scheduler or gateway)."""

    instance_type: str

    _valid_type = field_validator("instance_type")(_check_instance_type)

    @property
    def vcpus(self) -> int:
        return INSTANCE_SHAPES[self.instance_type][0]

    @property
    def memory_gib(self) -> int:
        return INSTANCE_SHAPES[self.instance_type][1]


class SchedulerHostSettings(HostSettings):
    instance_type: str = "m5.2xlarge"
    """Per-user Dask schedulers share this host: 8 vCPUs and 32 GiB hold 32 schedulers at
    the default reservation (0.25 cores, 0.5 GB), more than expectedConcurrentUsers (30),
    with memory to spare for schedulers that burst to their limit."""


class GatewayHostSettings(HostSettings):
    instance_type: str = "t3.medium"
    """JupyterHub + dask-gateway-server; light load."""
    state_volume_gib: int = Field(8, ge=1, le=1024)
    """The encrypted EBS volume that holds the gateway's and JupyterHub's state (databases,
    keys, cookie secret) and outlives any one gateway instance."""


class WorkerPoolSettings(HostSettings):
    """The worker Auto Scaling group."""

    instance_type: str = "c5.large"
    min: int = Field(5, ge=0, le=100)
    """Warm nodes kept even when idle, so clusters start in seconds."""
    max: int = Field(20, ge=1, le=100)
    """Hard ceiling on pool size (cost bound)."""
    scale_out_cpu: float = Field(70, gt=0, lt=100)
    """Average CPU % above which a node is added."""
    scale_in_cpu: float = Field(30, gt=0, lt=100)
    """Average CPU % below which an empty node is removed."""
    cooldown_seconds: int = Field(300, ge=60, le=3600)
    """Wait between scaling actions."""
    warm_pool_min: int = Field(2, ge=0, le=100)
    """Stopped, pre-initialised nodes (runtime installed) kept ready beside the group, so
    a scale-out joins in about a minute instead of a full boot; a stopped node costs
    only its disk. 0: no warm pool."""


# --------------------------------------------------------------------------- quotas


class GroupQuota(_Model):
    """Limits for one platform group. Cores and GB count worker resources."""

    priority: int = Field(ge=1, le=100)
    """Higher is served first when the pool is full."""
    cluster_max_cores: float = Field(gt=0)
    cluster_max_memory_gb: float = Field(gt=0)
    user_max_cores: float = Field(gt=0)
    """Total over all of one user's clusters (enforced by the pool backend)."""
    user_max_memory_gb: float = Field(gt=0)
    max_clusters: int = Field(2, ge=1, le=20)
    """Clusters one user may hold at once (running or waiting to start); one more is
    refused with a message, so nobody fills the scheduler host with idle clusters."""
    notebook_cores: float = Field(0.5, gt=0)
    """Cores of a user's JupyterLab server, placed on a worker node like a worker."""
    notebook_memory_gb: float = Field(1, gt=0)
    """Memory of a user's JupyterLab server."""
    ldap_groups: tuple[str, ...] = ()
    """LDAP/FreeIPA group names granting this platform group; empty means the same name."""
    monthly_budget_usd: float | None = Field(None, gt=0)
    """What the group's processes may cost per calendar month (usage estimate from
    ``costs``): an alert at 80 %, and at 100 % its members' new clusters are refused
    until the next month (admins never are). Default None: no budget."""


DEFAULT_QUOTAS: dict[str, dict[str, Any]] = {
    "admins": dict(priority=3, cluster_max_cores=16, cluster_max_memory_gb=32,
                   user_max_cores=32, user_max_memory_gb=64, max_clusters=4,
                   notebook_cores=1, notebook_memory_gb=2),
    "data_engineers": dict(priority=2, cluster_max_cores=4, cluster_max_memory_gb=8,
                           user_max_cores=4, user_max_memory_gb=8, max_clusters=2),
    "data_analysts": dict(priority=1, cluster_max_cores=2, cluster_max_memory_gb=4,
                          user_max_cores=2, user_max_memory_gb=4, max_clusters=2),
}
"""From the brief: data_engineers 4 cores / 8 GB, data_analysts 2 cores / 4 GB per user,
admins larger; two clusters at once each (admins four)."""


class QuotaSettings(_Model):
    groups: dict[str, GroupQuota] = Field(
        default_factory=lambda: {k: GroupQuota(**v) for k, v in DEFAULT_QUOTAS.items()}
    )
    idle_timeout_minutes: int = Field(120, ge=1)
    """Clusters with no activity stop after this long."""
    notebook_idle_minutes: float = Field(60, gt=0, le=10080)
    """JupyterLab servers with no activity (no open tab, no running kernel) are stopped
    after this long by jupyterhub-idle-culler, and the clusters they started with them.
    Default 60: a lunch break loses the kernel's memory, not the files in the home."""
    max_pending_per_user: int = Field(50, ge=1, le=50)
    """Worker requests one user may have waiting for room in the pool."""

    @field_validator("groups")
    @classmethod
    def _known_groups(cls, groups: dict[str, GroupQuota]) -> dict[str, GroupQuota]:
        unknown = sorted(set(groups) - set(PLATFORM_GROUPS))
        if unknown:
            raise ValueError(
                f"unknown group(s) {', '.join(unknown)}; allowed: {', '.join(PLATFORM_GROUPS)}"
            )
        missing = [g for g in PLATFORM_GROUPS if g not in groups]
        if missing:
            raise ValueError(f"missing group(s) {', '.join(missing)}; each of "
                             f"{', '.join(PLATFORM_GROUPS)} needs a quota")
        return groups

    def group_for_ldap(self, ldap_groups: set[str] | frozenset[str]) -> str | None:
        """The highest-priority platform group the given LDAP groups grant, if any."""
        granted = [
            (quota.priority, name)
            for name, quota in self.groups.items()
            if ldap_groups & set(quota.ldap_groups or (name,))
        ]
        return max(granted)[1] if granted else None

    def granting_ldap_groups(self) -> list[str]:
        """Every LDAP group that grants access, for error messages."""
        return sorted({g for n, q in self.groups.items() for g in (q.ldap_groups or (n,))})


# --------------------------------------------------------------------------- data access

DATA_BUCKET_KINDS = ("raw", "processed")
"""The buckets user code may be granted through its group's data role. ``audit`` is
written only by the platform (quarantine, manifests, access logs, reports) and
``artifacts`` holds the runtime: no group gets either."""
DataLevel = Literal["readwrite", "read", "none"]
"""``readwrite``: list, get, put and delete objects; ``read``: list and get; ``none``: the
bucket is refused."""
MAX_DATA_SESSION_MINUTES = 60
"""The gateway assumes data roles with its own role's session (the instance profile), and
AWS caps such chained sessions at one hour whatever a role's maximum says."""


class DataAccess(_Model):
    """What one platform group's data role may do in each data bucket."""

    raw: DataLevel
    processed: DataLevel

    @model_validator(mode="before")
    @classmethod
    def _only_data_buckets(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            platform = sorted(set(value) & (set(BUCKET_KINDS) - set(DATA_BUCKET_KINDS)))
            if platform:
                raise ValueError(
                    f"{', '.join(platform)}: no group gets access to the platform's own "
                    f"buckets (audit is written only through the platform); allowed keys: "
                    f"{', '.join(DATA_BUCKET_KINDS)}")
        return value


DEFAULT_DATA_ACCESS: dict[str, dict[str, str]] = {
    "admins": {"raw": "readwrite", "processed": "readwrite"},
    "data_engineers": {"raw": "readwrite", "processed": "readwrite"},
    "data_analysts": {"raw": "none", "processed": "read"},
}
"""From the brief: engineers read and write raw drops and processed data, analysts read
processed data only, admins as engineers."""


class DataAccessSettings(_Model):
    """Short-lived AWS credentials for user code, one IAM role per platform group."""

    groups: dict[str, DataAccess] = Field(
        default_factory=lambda: {k: DataAccess(**v) for k, v in DEFAULT_DATA_ACCESS.items()})
    session_minutes: int = Field(60, ge=15, le=MAX_DATA_SESSION_MINUTES)
    """How long one set of vended credentials lasts; boto3 and s3fs fetch the next set by
    themselves before it ends (``credential_process``). 15 is AWS's minimum; 60 the
    most a role session started from the gateway's own may last."""

    @field_validator("groups")
    @classmethod
    def _every_group(cls, groups: dict[str, DataAccess]) -> dict[str, DataAccess]:
        unknown = sorted(set(groups) - set(PLATFORM_GROUPS))
        missing = [g for g in PLATFORM_GROUPS if g not in groups]
        if unknown or missing:
            raise ValueError(
                (f"unknown group(s) {', '.join(unknown)}; " if unknown else "")
                + (f"missing group(s) {', '.join(missing)}; " if missing else "")
                + f"give each of {', '.join(PLATFORM_GROUPS)} its access, e.g. "
                "{raw: none, processed: read}")
        return groups


# --------------------------------------------------------------------------- clusters


class ClusterSettings(_Model):
    """Shapes of the Dask processes the gateway starts."""

    scheduler_cores: float = Field(0.25, gt=0)
    """Cores reserved per scheduler on the scheduler host (placement counts these).
    Measured (bench/scheduler_footprint.py, docs/capacity.md): an idle scheduler uses
    under 2 % of a core; a busy one up to a core, which it may burst to (below)."""
    scheduler_cpu_limit: float = Field(2, gt=0)
    """Cores a scheduler may burst to while it schedules a large graph (its cgroup's CPU
    cap); idle schedulers leave their share to busy ones, a documented CPU overcommit."""
    scheduler_memory_gb: float = Field(0.5, gt=0)
    """Memory reserved per scheduler. Measured: 0.06 GiB idle, 0.37 GiB peak while it ran
    a graph of 100,000 tasks."""
    scheduler_memory_limit_gb: float = Field(2, gt=0)
    """A scheduler's hard memory limit (its cgroup's): room for graphs several times that
    size. The sum of limits over a full host exceeds its memory (overcommit); the
    reservations never do."""
    worker_cores: float = Field(1, gt=0)
    """Default cores per worker; users may choose up to their group's cluster limit."""
    worker_memory_gb: float = Field(1.5, gt=0)
    """Default memory per worker (a c5.large holds two after the node reserve)."""
    node_reserved_memory_gb: float = Field(0.5, ge=0)
    """Memory kept for the OS and the node agent on every node."""

    # Dask's memory management (docs/dask-tuning.md), fractions of a worker's memory
    # limit, which is its cgroup limit.
    worker_memory_target: float = Field(0.6, gt=0, lt=1)
    """Managed data (task results) above this are spilled to disk, least recently used
    first. The brief's 0.6: 0.9 GB of a 1.5 GB worker."""
    worker_memory_spill: float = Field(0.7, gt=0, lt=1)
    """Process memory (what the cgroup counts, unmanaged memory included) above which the
    worker spills until it is back under the target (Dask's default)."""
    worker_memory_pause: float = Field(0.8, gt=0, lt=1)
    """Process memory above which the worker starts no new task; running tasks finish and
    spilling goes on (Dask's default)."""
    worker_memory_terminate: float = Field(0.9, gt=0, lt=1)
    """Process memory above which the nanny restarts the worker. Dask's 0.95 leaves 0.075 GB
    of a 1.5 GB worker, less than ``TERMINATE_HEADROOM_GB``: the kernel's OOM killer would
    act first, with no message saying why."""
    node_spill_disk_gb: float = Field(16, gt=0, le=ROOT_VOLUME_GIB - SYSTEM_DISK_GIB)
    """Local disk the workers of one node may fill with spilled data, each its share by
    memory (Dask's ``max-spill``), so spilling never fills the root volume. Spill files
    live in each worker's directory under the node agent's workdir: local disk, never
    EFS or a tmpfs ``/tmp`` (Amazon Linux 2023), where spilled bytes would stay in RAM."""

    # Scheduler options for many small interactive clusters.
    scheduler_allowed_failures: int = Field(2, ge=0)
    """Retries of a task whose worker died running it (Dask: 3). On 1.5 GB workers such a
    death is almost always memory; each retry restarts another worker and loses its
    results, so the user learns sooner that the task does not fit."""
    scheduler_work_stealing: bool = True
    """Idle workers take queued work from busy ones (Dask's default): clusters here start
    small and scale up, and new workers only get work already assigned by stealing."""
    scheduler_worker_saturation: float = Field(1.0, gt=0)
    """Root tasks sent per worker thread (Dask: 1.1). A worker has one thread per core, and
    ceil(1.1 x 1) = 2 root tasks would double the input held on a 1-core worker; 1.0 sends
    one per thread, the least memory."""

    @model_validator(mode="after")
    def _memory_order(self) -> ClusterSettings:
        check_memory_order(self)
        return self


DEFAULT_PRICES_USD_PER_HOUR: dict[str, float] = {
    "c5.large": 0.096, "c5.xlarge": 0.192, "c5.2xlarge": 0.384,
    "m5.large": 0.107, "m5.xlarge": 0.214, "m5.2xlarge": 0.428, "t3.medium": 0.0456,
}
"""On-demand Linux prices in eu-west-1 for the default and nearby instance types; set
your region's and any other type you use (``costs.instancePricesUsdPerHour``)."""


class CostSettings(_Model):
    """What an hour of each instance type costs, for cost estimates (simulation, usage)."""

    instance_prices_usd_per_hour: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_PRICES_USD_PER_HOUR))

    @field_validator("instance_prices_usd_per_hour")
    @classmethod
    def _known_types(cls, prices: dict[str, float]) -> dict[str, float]:
        for instance_type, price in prices.items():
            _check_instance_type(instance_type)
            if not price >= 0:
                raise ValueError(f"{instance_type}: a price must be >= 0, got {price}")
        return prices

    def hourly(self, instance_type: str) -> float:
        """The price of ``instance_type``; an unknown one is an error naming the key."""
        if instance_type not in self.instance_prices_usd_per_hour:
            raise SettingsError(
                f"{config_key('costs', 'instancePricesUsdPerHour')} has no price for "
                f"{instance_type}; add one")
        return self.instance_prices_usd_per_hour[instance_type]


class PortSettings(_Model):
    """The only ports in the platform (DESIGN.md, Ports)."""

    https: int = 443
    http: int = 80
    gateway_http: int = 8000
    """ALB -> gateway host: JupyterHub proxy / gateway HTTP."""
    gateway_tls: int = 8786
    """VPC -> gateway host: the gateway's scheduler TLS proxy."""
    node_agent: int = 8790
    """Gateway -> node agents."""
    scheduler_range: tuple[int, int] = (9000, 9199)
    """Scheduler comm and dashboard ports on the scheduler host."""
    worker_range: tuple[int, int] = (9200, 9999)
    """Worker and nanny ports on worker hosts (peer to peer)."""
    notebook_range: tuple[int, int] = (8800, 8899)
    """Users' JupyterLab servers on worker hosts (JupyterHub's proxy on the gateway host
    reaches them); a worker node holds at most this many notebooks."""
    hub_api: int = 8081
    """Worker hosts -> gateway host: JupyterHub's API, which notebook servers call."""
    nfs: int = 2049
    ldaps: int = 636

    @field_validator("scheduler_range", "worker_range", "notebook_range")
    @classmethod
    def _ordered(cls, value: tuple[int, int]) -> tuple[int, int]:
        low, high = value
        if not 1024 <= low <= high <= 65535:
            raise ValueError(f"range {low}-{high} must satisfy 1024 <= low <= high <= 65535")
        return value


class TimeoutSettings(_Model):
    cluster_start_seconds: float = Field(60, gt=0)
    """How long the gateway waits for a scheduler to come up."""
    worker_start_seconds: float = Field(60, gt=0)
    agent_request_seconds: float = Field(10, gt=0)
    """One HTTP call to a node agent."""
    stop_grace_seconds: float = Field(10, ge=0)
    """SIGTERM, then SIGKILL after this long."""
    ldap_cache_seconds: float = Field(300, ge=0)
    """How long a successful LDAP login and its groups are reused."""
    orphan_grace_seconds: float = Field(300, ge=0, le=86400)
    """How long a Dask process that no record of the gateway explains (the orphan of a
    lost database) may run before the gateway stops it; it is logged when found."""
    drain_seconds: float = Field(7200, gt=0, le=7 * 86400)
    """How long a roll-out waits for a busy worker node to empty before it reports the
    node as stuck (with whose clusters hold it); it never stops user work."""


# --------------------------------------------------------------------------- monitoring

_WEBHOOK_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")


class Webhook(_Model):
    """An HTTPS endpoint subscribed to the alert topic; SNS posts each alert to it as a
    JSON notification, after the endpoint confirms the subscription (docs/monitoring.md:
    PagerDuty's CloudWatch integration URL does both; a Slack incoming webhook does
    neither and needs a translating endpoint, or AWS Chatbot)."""

    name: str
    """Names the subscription resource: lowercase letters, digits and dashes."""
    url: str
    """``https://...``; SNS refuses anything else for the https protocol, and an alert
    must not travel in clear text."""

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not _WEBHOOK_NAME.match(value):
            raise ValueError(f"{value!r} must be 1-40 lowercase letters, digits or dashes "
                             "(e.g. pagerduty, slack-relay)")
        return value

    @field_validator("url")
    @classmethod
    def _valid_url(cls, value: str) -> str:
        return check_https_url(value)


def check_https_url(value: str) -> str:
    """An absolute https:// URL with a host and no spaces."""
    if not re.match(r"^https://[^/\s?#]+(/\S*)?$", value):
        shown = value if len(value) <= 60 else value[:57] + "..."
        raise ValueError(f"{shown!r} is not an https:// URL; webhooks must be https "
                         "(e.g. https://events.pagerduty.com/integration/<key>/enqueue)")
    return value


class MonitoringSettings(_Model):
    """Alarm thresholds (each alarm notifies the alert topic) and webhooks on that topic."""

    worker_cpu_percent: float = Field(85, gt=0, le=100)
    """Worker pool average CPU above this for 10 minutes raises an alarm."""
    queued_tasks: int = Field(50, ge=1)
    """Tasks waiting for a worker on all schedulers together above this for 5 minutes."""
    cluster_start_p90_seconds: float = Field(120, gt=0, le=3600)
    """The 90th percentile of cluster start latency (request to first worker running)
    above this over 15 minutes: clusters should start in seconds on the warm pool; a
    minute or two means the pool is scaling out from cold."""
    worker_memory_percent: float = Field(85, gt=0, le=100)
    """Workers' average memory use, as a percentage of their limits, above this for 10
    minutes: they spill and pause (clusters.workerMemorySpill/Pause) and soon restart."""
    efs_burst_credit_gib: float = Field(512, gt=0, le=2150)
    """EFS burst credits below this many GiB raise an alarm before throughput falls to the
    baseline (a new file system starts with 2.1 TiB)."""
    webhooks: tuple[Webhook, ...] = ()
    """HTTPS endpoints (PagerDuty, a Slack relay) subscribed to the alert topic."""

    @field_validator("webhooks")
    @classmethod
    def _distinct_names(cls, hooks: tuple[Webhook, ...]) -> tuple[Webhook, ...]:
        names = [hook.name for hook in hooks]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"webhook name(s) {', '.join(repeated)} used more than once; "
                             "give each webhook its own name")
        return hooks


# --------------------------------------------------------------------------- pipeline

_ACCOUNT_NAME = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")


class PipelineSettings(_Model):
    """The AppsFlyer pipeline watcher (``dask-platform pipeline watch``, docs/monitoring.md):
    S3 notifications of new raw drops, processed on a gateway cluster."""

    raw_prefix: str = "appsflyer/"
    """Where AppsFlyer drops land in the raw bucket; only objects below it notify."""
    service_user: str = "svc-pipeline"
    """The directory account the watcher logs in to the gateway as; a member of a
    platform group (data_engineers by default), so its clusters have that group's quota
    and its usage shows under its own name."""
    workers: int = Field(2, ge=1, le=20)
    """Workers of the watcher's cluster (default size from ``clusters``)."""
    max_receives: int = Field(3, ge=1, le=1000)
    """Failed runs of a drop before its notification moves to the dead-letter queue."""
    retry_seconds: int = Field(600, ge=30, le=43200)
    """A failed drop's wait before its retry (the queue's visibility timeout; the watcher
    keeps extending it while a run lasts)."""

    @field_validator("raw_prefix")
    @classmethod
    def _valid_prefix(cls, value: str) -> str:
        if not re.match(r"^[A-Za-z0-9!_.*'()=-][A-Za-z0-9!_.*'()=/-]*/$", value):
            raise ValueError(f"{value!r} must be a key prefix ending in / with no leading "
                             "/ (e.g. appsflyer/)")
        return value

    @field_validator("service_user")
    @classmethod
    def _valid_user(cls, value: str) -> str:
        if not _ACCOUNT_NAME.match(value):
            raise ValueError(f"{value!r} is not a directory login name (lowercase letters, "
                             "digits, _ . -; e.g. svc-pipeline)")
        return value


# --------------------------------------------------------------------------- certificates

MAX_CA_BUNDLE_CHARS = 6000
"""The runtime settings (an SSM parameter, at most 8 KB) carry the CA bundle; a FreeIPA
CA certificate is about 1.5 KB."""
SYSTEM_TRUST = "system"
"""``ldapCaBundle`` value meaning: trust the hosts' system CA store for LDAPS."""
_PEM_BLOCK = re.compile(
    r"-----BEGIN ([A-Z0-9 ]+)-----\s*([A-Za-z0-9+/=\s]+?)\s*-----END \1-----")


def check_pem_certificates(value: str) -> str:
    """One or more PEM ``CERTIFICATE`` blocks and nothing else (never a private key)."""
    text = value.strip()
    blocks = list(_PEM_BLOCK.finditer(text))
    kinds = {m.group(1) for m in blocks}
    if any("PRIVATE KEY" in kind for kind in kinds):
        raise ValueError("holds a private key; it must hold only the CA's certificate "
                         "(-----BEGIN CERTIFICATE-----); remove the key and rotate it")
    leftover = _PEM_BLOCK.sub("", text).strip()
    if not blocks or kinds != {"CERTIFICATE"} or leftover:
        raise ValueError(
            "must be the CA certificate in PEM (-----BEGIN CERTIFICATE----- ... "
            f"-----END CERTIFICATE-----, e.g. FreeIPA's /etc/ipa/ca.crt), or {SYSTEM_TRUST!r} "
            "for the hosts' system trust store")
    return text + "\n"


class RuntimeSettings(_Model):
    """What the hosts read at run time (published as an SSM parameter)."""

    quotas: QuotaSettings = Field(default_factory=QuotaSettings)
    clusters: ClusterSettings = Field(default_factory=ClusterSettings)
    ports: PortSettings = Field(default_factory=PortSettings)
    timeouts: TimeoutSettings = Field(default_factory=TimeoutSettings)
    scheduler: SchedulerHostSettings = Field(default_factory=SchedulerHostSettings)
    workers: WorkerPoolSettings = Field(default_factory=WorkerPoolSettings)
    costs: CostSettings = Field(default_factory=CostSettings)
    data_access: DataAccessSettings = Field(default_factory=DataAccessSettings)
    pipeline: PipelineSettings = Field(default_factory=PipelineSettings)
    ldap_url: str = ""
    ldap_base_dn: str = ""
    ldap_bind_dn: str = ""
    ldap_ca_bundle: str = Field("", max_length=MAX_CA_BUNDLE_CHARS)
    """PEM certificates of the CA that signs the directory's LDAPS certificate (FreeIPA's
    own CA); the only CA the runtime trusts for LDAP. Empty: the system trust store."""
    ldap_bind_password_secret_id: str = ""
    """Secrets Manager name (or ARN) of the bind password; never the password itself.
    The stack names the secret, so this is known at preview and the policy pack can
    check the whole parameter before anything exists."""
    metrics_namespace: str = "DaskPlatform"
    """CloudWatch namespace of the platform metrics (``*_METRIC`` below); the stack
    publishes ``DaskPlatform/<stack>`` so stacks sharing an account stay apart."""
    stack_name: str = ""
    """The Pulumi stack whose hosts these are; the gateway finds the scheduler host by
    its tags (``STACK_TAG`` = this, ``ROLE_TAG`` = scheduler). Empty locally, where
    nodes are a static list."""
    worker_asg_name: str = ""
    """The worker Auto Scaling group (the gateway lists its nodes and protects busy ones
    from scale-in). Empty locally."""
    worker_boot_hook: str = ""
    """The worker group's launch lifecycle hook: a worker completes it once its agent
    serves (``host-setup``), so the group counts only booted nodes. Empty locally."""
    agent_token_secret_id: str = ""
    """Secrets Manager name of the node agents' bearer token: the gateway fills it on
    first start, the agents wait for it. Empty locally, where a token file is used."""
    data_roles: dict[str, str] = Field(default_factory=dict)
    """Platform group -> the name of its data role (``dataAccess``), which the gateway
    assumes for the group's members. Empty: the gateway vends no data credentials."""
    runtime_version: str = ""
    """The runtime version the stack last uploaded (``daskplatform.runtime_version``),
    what ``dask-platform rollout`` brings every host to. Empty locally."""

    @field_validator("ldap_ca_bundle")
    @classmethod
    def _valid_ca_bundle(cls, value: str) -> str:
        return check_pem_certificates(value) if value else value

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True)

    @classmethod
    def from_json(cls, text: str) -> RuntimeSettings:
        return cls.model_validate_json(text)


# --------------------------------------------------------------------------- metrics

PENDING_WORKERS_METRIC = "PendingWorkers"
"""Worker requests waiting for room in the pool (gateway; the dashboard shows it)."""
BACKLOG_NODES_METRIC = "BacklogNodes"
"""Worker nodes the waiting workers need (gateway, daskplatform.scaling): the worker
group adds that many at once."""
IDLE_NODES_METRIC = "IdleNodes"
"""Worker nodes with no Dask process, the only ones not protected from scale-in
(gateway): with low CPU, the worker group removes that many."""
ACTIVE_WORKERS_METRIC = "ActiveWorkers"
"""Dask workers running across the pool (gateway)."""
ACTIVE_CLUSTERS_METRIC = "ActiveClusters"
"""Dask clusters running (gateway); with ActiveWorkers at 0 this raises an alarm."""
QUEUED_TASKS_METRIC = "QueuedTasks"
"""Tasks waiting on all schedulers together (gateway); above 50 raises an alarm."""
WORKER_MANAGED_METRIC = "WorkerManagedBytes"
"""Task results each worker holds in RAM (gateway): one sample per worker, so Maximum is
the fullest worker and Sum the pool; likewise the two below."""
WORKER_UNMANAGED_METRIC = "WorkerUnmanagedBytes"
"""The rest of each worker's process memory: interpreter, running tasks, leaks."""
WORKER_SPILLED_METRIC = "WorkerSpilledBytes"
"""Task results each worker has spilled to disk."""
WORKER_MEMORY_PERCENT_METRIC = "WorkerMemoryUsedPercent"
"""Each worker's process memory (managed + unmanaged) as a percentage of its limit: one
sample per worker, so Average is the pool and Maximum the fullest worker; above
``monitoring.workerMemoryPercent`` (Average) raises an alarm."""
POOL_MEMORY_RESERVED_METRIC = "PoolMemoryReservedPercent"
"""Memory the gateway has placed on worker nodes (workers, notebooks) as a percentage of
what they offer: how full the pool is, beside CPU."""
CLUSTER_START_METRIC = "ClusterStartLatencySeconds"
"""Seconds from a cluster request to its first worker running, one value per cluster
(raw values, so CloudWatch has percentiles); published without dimensions (the alarm
watches its p90) and per ``Group``."""

# --------------------------------------------------------------------------- host tags

ROLE_TAG = "dask-platform:role"
"""Instance tag naming a host's role (gateway, scheduler, worker); the stack sets it."""
STACK_TAG = "stack"
"""Instance tag naming the host's stack, among the common tags on every resource."""


# --------------------------------------------------------------------------- platform


def _cidr(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=True))
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a valid CIDR block like 10.0.0.0/16 ({exc})") from None


_SUBNET_ID = re.compile(r"^subnet-[0-9a-f]{8,17}$")
_VPC_ID = re.compile(r"^vpc-[0-9a-f]{8,17}$")
_ACM_ARN = re.compile(r"^arn:aws[a-z-]*:acm:[a-z0-9-]+:\d{12}:certificate/[0-9a-f-]+$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class PlatformSettings(_Model):
    """All stack config, validated. Required keys have no default."""

    vpc_id: str | None = None
    """Adopt this existing VPC instead of creating one (needs both subnet lists)."""
    private_subnet_ids: tuple[str, ...] = ()
    public_subnet_ids: tuple[str, ...] = ()
    vpc_cidr: str = "10.0.0.0/16"
    """CIDR of the VPC the stack creates when vpcId is not set."""
    allowed_cidrs: tuple[str, ...] = Field(min_length=1)
    """Who may reach the ALB on 443/80. Required: there is no open default."""
    certificate_arn: str
    """ACM certificate for the HTTPS listener."""
    ldap_url: str
    """FreeIPA LDAP, ldaps://host:636 (or ldap:// with StartTLS)."""
    ldap_base_dn: str
    ldap_bind_dn: str
    ldap_ca_bundle: str = Field(max_length=MAX_CA_BUNDLE_CHARS)
    """FreeIPA's CA certificate (PEM), which hosts trust for LDAPS; ``system`` to use the
    hosts' system trust store instead (a directory certificate from a public CA). Not a
    secret: it reaches hosts in the runtime settings, never in user data."""
    ldap_bind_password: SecretStr | None = None
    """Service bind password; stored in Secrets Manager. Unset: the secret is created
    empty and filled out of band, so the password never enters stack state."""
    scheduler: SchedulerHostSettings = Field(default_factory=SchedulerHostSettings)
    gateway: GatewayHostSettings = Field(default_factory=GatewayHostSettings)
    workers: WorkerPoolSettings = Field(default_factory=WorkerPoolSettings)
    quotas: QuotaSettings = Field(default_factory=QuotaSettings)
    clusters: ClusterSettings = Field(default_factory=ClusterSettings)
    ports: PortSettings = Field(default_factory=PortSettings)
    timeouts: TimeoutSettings = Field(default_factory=TimeoutSettings)
    costs: CostSettings = Field(default_factory=CostSettings)
    data_access: DataAccessSettings = Field(default_factory=DataAccessSettings)
    monitoring: MonitoringSettings = Field(default_factory=MonitoringSettings)
    pipeline: PipelineSettings = Field(default_factory=PipelineSettings)
    expected_concurrent_users: int = Field(30, ge=1, le=1000)
    """People using the platform at the same time (the team's size, 20-30): the scheduler
    host must hold a cluster for each at once (checked, docs/capacity.md)."""
    alert_emails: tuple[str, ...] = ()
    tags: dict[str, str] = Field(default_factory=dict)
    """Added to the common tags on every taggable resource."""

    @field_validator("vpc_cidr")
    @classmethod
    def _valid_vpc_cidr(cls, value: str) -> str:
        network = ipaddress.ip_network(_cidr(value))
        if not 16 <= network.prefixlen <= 24:
            raise ValueError(
                f"{value!r} must be a /16 to /24 block: the stack cuts it into four "
                "subnets of a sixteenth each, and AWS subnets are at least /28"
            )
        return str(network)

    @field_validator("allowed_cidrs")
    @classmethod
    def _valid_cidrs(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_cidr(v) for v in values)

    @field_validator("vpc_id")
    @classmethod
    def _valid_vpc_id(cls, value: str | None) -> str | None:
        if value is not None and not _VPC_ID.match(value):
            raise ValueError(f"{value!r} is not a VPC id like vpc-0123456789abcdef0")
        return value

    @field_validator("private_subnet_ids", "public_subnet_ids")
    @classmethod
    def _valid_subnet_ids(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        bad = [v for v in values if not _SUBNET_ID.match(v)]
        if bad:
            raise ValueError(f"{', '.join(map(repr, bad))} not subnet ids like subnet-0123abcd")
        return values

    @field_validator("certificate_arn")
    @classmethod
    def _valid_certificate(cls, value: str) -> str:
        if not _ACM_ARN.match(value):
            raise ValueError(
                f"{value!r} is not an ACM certificate ARN like "
                "arn:aws:acm:<region>:<account>:certificate/<id>"
            )
        return value

    @field_validator("ldap_url")
    @classmethod
    def _valid_ldap_url(cls, value: str) -> str:
        if not re.match(r"^ldaps?://[^/\s]+$", value):
            raise ValueError(f"{value!r} must look like ldaps://host:636 or ldap://host:389")
        return value

    @field_validator("ldap_ca_bundle")
    @classmethod
    def _valid_ca_bundle(cls, value: str) -> str:
        return value if value == SYSTEM_TRUST else check_pem_certificates(value)

    @field_validator("alert_emails")
    @classmethod
    def _valid_emails(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        bad = [v for v in values if not _EMAIL.match(v)]
        if bad:
            raise ValueError(f"not e-mail addresses: {', '.join(map(repr, bad))}")
        return values

    @model_validator(mode="after")
    def _cross_field(self) -> PlatformSettings:
        check_network(self)
        check_edge(self.allowed_cidrs)
        check_worker_pool(self.workers)
        check_quotas(self.quotas, self.clusters, self.workers, self.scheduler)
        check_terminate_headroom(self.clusters)
        check_capacity(self.expected_concurrent_users, self.clusters, self.scheduler)
        check_ports(self.ports)
        return self

    @property
    def adopts_vpc(self) -> bool:
        return self.vpc_id is not None

    @property
    def internal_alb(self) -> bool:
        """The ALB is internal (private subnets) when no allowed CIDR is a global (public)
        range: an internet-facing ALB could never be reached from private, shared (CGNAT
        VPNs) or reserved addresses."""
        return not any(ipaddress.ip_network(c).is_global for c in self.allowed_cidrs)

    def runtime(self, ldap_bind_password_secret_id: str = "",
                **names: str | dict[str, str]) -> RuntimeSettings:
        """The host-facing part of the settings (no secrets).

        ``names`` are the RuntimeSettings fields only the stack knows (``stack_name``,
        ``worker_asg_name``, ``agent_token_secret_id``, ``metrics_namespace``,
        ``data_roles``); left out, they keep their local defaults.
        """
        return RuntimeSettings(
            quotas=self.quotas,
            clusters=self.clusters,
            ports=self.ports,
            timeouts=self.timeouts,
            scheduler=self.scheduler,
            workers=self.workers,
            costs=self.costs,
            data_access=self.data_access,
            pipeline=self.pipeline,
            ldap_url=self.ldap_url,
            ldap_base_dn=self.ldap_base_dn,
            ldap_bind_dn=self.ldap_bind_dn,
            ldap_ca_bundle="" if self.ldap_ca_bundle == SYSTEM_TRUST else self.ldap_ca_bundle,
            ldap_bind_password_secret_id=ldap_bind_password_secret_id,
            **names,
        )


# --------------------------------------------------------------------------- cross-field checks


def check_network(settings: PlatformSettings) -> None:
    """Adopting a VPC needs private and public subnets in at least two AZs each."""
    subnet_keys = {"privateSubnetIds": settings.private_subnet_ids,
                   "publicSubnetIds": settings.public_subnet_ids}
    if settings.vpc_id is None:
        given = [key for key, ids in subnet_keys.items() if ids]
        if given:
            raise SettingsError(
                f"{config_key(given[0])} is set but {config_key('vpcId')} is not; "
                "set vpcId to adopt an existing VPC, or leave all three unset to create one"
            )
        return
    for key, ids in subnet_keys.items():
        if len(ids) < 2:
            raise SettingsError(
                f"{config_key(key)} needs at least 2 subnets (one per AZ) when "
                f"{config_key('vpcId')} is set; got {len(ids)}"
            )


def check_edge(allowed_cidrs: tuple[str, ...]) -> None:
    """An ALB is either internal (private ranges: VPN, peering, Direct Connect) or
    internet-facing (public ranges); one list cannot ask for both."""
    public = [c for c in allowed_cidrs if ipaddress.ip_network(c).is_global]
    private = [c for c in allowed_cidrs if c not in public]
    if private and public:
        raise SettingsError(
            f"{config_key('allowedCidrs')} mixes private ({', '.join(private)}) and public "
            f"({', '.join(public)}) ranges; the ALB is internal when every range is private "
            "and internet-facing when every range is public: keep one kind (reach a private "
            "ALB from the internet through your VPN)")


def check_worker_pool(workers: WorkerPoolSettings) -> None:
    """Bounds ordered and scale-in threshold below scale-out."""
    if workers.min > workers.max:
        raise SettingsError(
            f"{config_key('workers', 'min')} ({workers.min}) must be <= "
            f"{config_key('workers', 'max')} ({workers.max})"
        )
    if workers.scale_in_cpu >= workers.scale_out_cpu:
        raise SettingsError(
            f"{config_key('workers', 'scaleInCpu')} ({workers.scale_in_cpu:g}) must be below "
            f"{config_key('workers', 'scaleOutCpu')} ({workers.scale_out_cpu:g}), "
            "otherwise the pool would flap"
        )


def node_capacity(host: HostSettings, clusters: ClusterSettings) -> tuple[float, float]:
    """(cores, GB) one node offers to Dask processes after the node reserve."""
    return float(host.vcpus), host.memory_gib - clusters.node_reserved_memory_gb


def process_fit_problems(
    clusters: ClusterSettings, workers: HostSettings, scheduler: HostSettings
) -> list[str]:
    """A worker or scheduler larger than its host would wait in the queue forever."""
    problems = []
    for role, host, where, cores, memory in (
        ("worker", workers, "node", clusters.worker_cores, clusters.worker_memory_gb),
        ("scheduler", scheduler, "scheduler host", clusters.scheduler_cores,
         clusters.scheduler_memory_gb),
    ):
        host_cores, host_memory = node_capacity(host, clusters)
        if cores > host_cores or memory > host_memory:
            problems.append(
                f"{config_key('clusters', role + 'Cores')}/{role}MemoryGb: a {role} "
                f"({cores:g} cores, {memory:g} GB) does not fit a {host.instance_type} {where} "
                f"({host_cores:g} cores, {host_memory:g} GB after "
                f"{config_key('clusters', 'nodeReservedMemoryGb')}); shrink it or pick a "
                "larger instance type"
            )
    return problems


def notebook_fit_problems(quotas: QuotaSettings, clusters: ClusterSettings,
                          workers: HostSettings) -> list[str]:
    """A group's notebook server larger than a worker node could never start."""
    node_cores, node_memory = node_capacity(workers, clusters)
    return [
        f"{config_key('quotas', 'groups', name)}.notebookCores/notebookMemoryGb: a notebook "
        f"({quota.notebook_cores:g} cores, {quota.notebook_memory_gb:g} GB) does not fit a "
        f"{workers.instance_type} node ({node_cores:g} cores, {node_memory:g} GB); shrink it"
        for name, quota in quotas.groups.items()
        if quota.notebook_cores > node_cores or quota.notebook_memory_gb > node_memory
    ]


def quota_limit_problems(quotas: QuotaSettings, clusters: ClusterSettings) -> list[str]:
    """A per-cluster limit above the per-user total can never be reached, and one below a
    default worker can never start one."""
    problems = []
    for name, quota in quotas.groups.items():
        key = config_key("quotas", "groups", name)
        for what, cluster, user in (
            ("Cores", quota.cluster_max_cores, quota.user_max_cores),
            ("MemoryGb", quota.cluster_max_memory_gb, quota.user_max_memory_gb),
        ):
            if cluster > user:
                problems.append(
                    f"{key}.clusterMax{what} ({cluster:g}) must be <= {key}.userMax{what} "
                    f"({user:g}); lower it to at most that"
                )
        if (quota.cluster_max_cores < clusters.worker_cores
                or quota.cluster_max_memory_gb < clusters.worker_memory_gb):
            problems.append(
                f"{key}: per-cluster quota ({quota.cluster_max_cores:g} cores, "
                f"{quota.cluster_max_memory_gb:g} GB) cannot hold one default worker "
                f"({clusters.worker_cores:g} cores, {clusters.worker_memory_gb:g} GB); raise "
                f"it or shrink {config_key('clusters', 'workerCores')}/workerMemoryGb"
            )
    return problems


def quota_pool_problems(
    quotas: QuotaSettings, clusters: ClusterSettings, workers: WorkerPoolSettings
) -> list[str]:
    """A per-user total the pool cannot hold at its maximum size is a false promise."""
    node_cores, node_memory = node_capacity(workers, clusters)
    pool_cores, pool_memory = node_cores * workers.max, node_memory * workers.max
    pool = (f"{config_key('workers', 'max')}={workers.max} x {workers.instance_type} "
            f"({pool_cores:g} cores, {pool_memory:g} GB)")
    problems = []
    for name, quota in quotas.groups.items():
        key = config_key("quotas", "groups", name)
        for what, value, limit in (("Cores", quota.user_max_cores, pool_cores),
                                   ("MemoryGb", quota.user_max_memory_gb, pool_memory)):
            if value > limit:
                problems.append(
                    f"{key}.userMax{what} ({value:g}) exceeds what the pool can ever hold at "
                    f"{pool}; lower it or raise {config_key('workers', 'max')}"
                )
    return problems


def priority_problems(quotas: QuotaSettings) -> list[str]:
    """Equal priorities would make the queue order between groups arbitrary."""
    by_priority: dict[int, list[str]] = {}
    for name, quota in quotas.groups.items():
        by_priority.setdefault(quota.priority, []).append(name)
    return [
        f"{', '.join(config_key('quotas', 'groups', g) + '.priority' for g in groups)} are "
        f"all {priority}; give each group a distinct priority"
        for priority, groups in sorted(by_priority.items())
        if len(groups) > 1
    ]


def check_quotas(
    quotas: QuotaSettings,
    clusters: ClusterSettings,
    workers: WorkerPoolSettings,
    scheduler: HostSettings,
) -> None:
    """Quotas the pool can actually serve, and an unambiguous priority order; the error
    lists every problem, each naming its keys and how to fix it."""
    problems = [
        *process_fit_problems(clusters, workers, scheduler),
        *notebook_fit_problems(quotas, clusters, workers),
        *quota_limit_problems(quotas, clusters),
        *quota_pool_problems(quotas, clusters, workers),
        *priority_problems(quotas),
    ]
    if problems:
        raise SettingsError("\n  ".join(problems))


MEMORY_FRACTIONS = ("worker_memory_target", "worker_memory_spill", "worker_memory_pause",
                    "worker_memory_terminate")
"""In the order Dask acts as a worker fills: spill, spill more, pause, restart."""

TERMINATE_HEADROOM_GB = 0.1
"""What a default worker's cgroup must keep above the terminate threshold, so that the
nanny restarts the worker before the kernel's OOM killer acts: the nanny's own memory in
the same cgroup (about 60 MB when started cold; forked warm, it is outweighed by the
pages shared with the fork server, which the worker's RSS counts and the cgroup does
not) plus what a task allocating steadily (~400 MB/s) adds in one 100 ms memory-monitor
interval. Measured on a dev machine (2026-12-01)."""


def check_memory_order(clusters: ClusterSettings) -> None:
    """Thresholds out of order would make a later stage act before an earlier one (e.g.
    pause before spilling)."""
    values = [getattr(clusters, name) for name in MEMORY_FRACTIONS]
    if all(low < high for low, high in pairwise(values)):
        return
    named = ", ".join(f"{to_camel(name)} ({value:g})"
                      for name, value in zip(MEMORY_FRACTIONS, values))
    raise SettingsError(
        f"{config_key('clusters', 'workerMemory*')}: {named} must increase in that order, "
        "each below 1: as a worker fills, Dask spills, then pauses, then restarts it"
    )


def terminate_headroom_problems(clusters: ClusterSettings) -> list[str]:
    """The terminate threshold of a default worker must sit far enough below its cgroup
    limit for the nanny to act first."""
    memory_gb, terminate = clusters.worker_memory_gb, clusters.worker_memory_terminate
    headroom_gb = (1 - terminate) * memory_gb
    if headroom_gb >= TERMINATE_HEADROOM_GB - 1e-9:
        return []
    return [(
        f"{config_key('clusters', 'workerMemoryTerminate')} ({terminate:g}) leaves "
        f"{headroom_gb:.3g} GB of a {memory_gb:g} GB worker "
        f"({config_key('clusters', 'workerMemoryGb')}) below its cgroup limit; at most "
        f"{1 - TERMINATE_HEADROOM_GB / memory_gb:.3f} keeps the {TERMINATE_HEADROOM_GB:g} GB "
        "the nanny needs to restart the worker before the kernel's OOM killer kills it"
    )]


def check_terminate_headroom(clusters: ClusterSettings) -> None:
    """Raises the headroom problem (stack config; the policy pack has its own rule)."""
    problems = terminate_headroom_problems(clusters)
    if problems:
        raise SettingsError("\n  ".join(problems))


def scheduler_slots(scheduler: HostSettings, clusters: ClusterSettings) -> int:
    """Clusters the scheduler host holds at once: its cores and memory (after the node
    reserve) over each scheduler's reservation."""
    cores, memory = node_capacity(scheduler, clusters)
    return int(min(cores / clusters.scheduler_cores,
                   memory / clusters.scheduler_memory_gb) + 1e-9)


def capacity_problems(expected_users: int, clusters: ClusterSettings,
                      scheduler: HostSettings) -> list[str]:
    """The scheduler host holds a cluster for every expected user at once, and each
    scheduler's limits are at least its reservation and at most the host."""
    host_cores, host_memory = node_capacity(scheduler, clusters)
    problems = []
    for what, reserved, limit, host in (
            ("Cores", clusters.scheduler_cores, clusters.scheduler_cpu_limit, host_cores),
            ("MemoryGb", clusters.scheduler_memory_gb, clusters.scheduler_memory_limit_gb,
             host_memory)):
        limit_key = "schedulerCpuLimit" if what == "Cores" else "schedulerMemoryLimitGb"
        if not reserved <= limit <= host:
            problems.append(
                f"{config_key('clusters', limit_key)} ({limit:g}) must be at least "
                f"{config_key('clusters', 'scheduler' + what)} ({reserved:g}) and at most "
                f"what a {scheduler.instance_type} scheduler host offers ({host:g})")
    slots = scheduler_slots(scheduler, clusters)
    if slots < expected_users:
        problems.append(
            f"{config_key('expectedConcurrentUsers')} is {expected_users}, but a "
            f"{scheduler.instance_type} scheduler host ({config_key('scheduler', 'instanceType')}) "
            f"holds {slots} clusters at once with {config_key('clusters', 'schedulerCores')} = "
            f"{clusters.scheduler_cores:g} and {config_key('clusters', 'schedulerMemoryGb')} = "
            f"{clusters.scheduler_memory_gb:g}; pick a larger instance type or smaller "
            "reservations (docs/capacity.md)")
    return problems


def check_capacity(expected_users: int, clusters: ClusterSettings,
                   scheduler: HostSettings) -> None:
    problems = capacity_problems(expected_users, clusters, scheduler)
    if problems:
        raise SettingsError("\n  ".join(problems))


def check_ports(ports: PortSettings) -> None:
    """The process ranges must not overlap each other or the fixed ports."""
    ranges = {"schedulerRange": ports.scheduler_range, "workerRange": ports.worker_range,
              "notebookRange": ports.notebook_range}
    names = list(ranges)
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            (a_low, a_high), (b_low, b_high) = ranges[first], ranges[second]
            if a_low <= b_high and b_low <= a_high:
                raise SettingsError(
                    f"{config_key('ports', first)} {a_low}-{a_high} overlaps "
                    f"{config_key('ports', second)} {b_low}-{b_high}")
    fixed = {"gatewayHttp": ports.gateway_http, "gatewayTls": ports.gateway_tls,
             "nodeAgent": ports.node_agent, "hubApi": ports.hub_api}
    for name, port in fixed.items():
        for range_name, (low, high) in ranges.items():
            if low <= port <= high:
                raise SettingsError(
                    f"{config_key('ports', name)} ({port}) falls inside "
                    f"{config_key('ports', range_name)} {low}-{high}"
                )


# --------------------------------------------------------------------------- loading


def validation_problems(exc: ValidationError) -> list[str]:
    """One line per error, each naming its ``dask-platform:`` key (stack config, and the
    policy pack's check of the published runtime settings)."""
    lines = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"] if not str(p).startswith("function-")]
        message = err["msg"].removeprefix("Value error, ")
        if not loc or message.startswith(CONFIG_NAMESPACE + ":"):
            # a cross-field check: its message already names the keys
            lines.append(message)
            continue
        key = config_key(*loc)
        if err["type"] == "missing":
            path_flag = "--path " if len(loc) > 1 else ""  # nested keys need --path
            message = f"is required but not set (pulumi config set {path_flag}{'.'.join(loc)} ...)"
        elif err["type"] == "extra_forbidden":
            message = "is not a known setting; see the config reference in README.md"
        lines.append(f"{key}: {message}")
    return lines


def load_settings(raw: Mapping[str, Any]) -> PlatformSettings:
    """Validate raw config (keys without the namespace) into settings.

    Raises SettingsError whose message names each offending key.
    """
    try:
        return PlatformSettings.model_validate(dict(raw))
    except ValidationError as exc:
        # pydantic wraps a SettingsError raised in a model validator as a value error.
        raise SettingsError(
            "invalid stack settings:\n  " + "\n  ".join(validation_problems(exc))
        ) from None


def strip_namespace(config: Mapping[str, Any]) -> dict[str, Any]:
    """Keep ``dask-platform:*`` keys without the prefix; other namespaces (aws:) are not ours."""
    prefix = CONFIG_NAMESPACE + ":"
    return {k[len(prefix):]: v for k, v in config.items() if k.startswith(prefix)}


def load_stack_file(path: str) -> PlatformSettings:
    """Settings from a ``Pulumi.<stack>.yaml`` file (local mode and the offline plan).

    ``secure:`` values cannot be decrypted without Pulumi; they are left unset here.
    """
    with open(path, encoding="utf-8") as fh:
        document = yaml.safe_load(fh) or {}
    raw = strip_namespace(document.get("config") or {})
    raw = {k: v for k, v in raw.items() if not (isinstance(v, dict) and "secure" in v)}
    return load_settings(raw)
