"""Quotas by platform group: the cluster options users may choose, the per-cluster
limits handed to dask-gateway, and the per-user totals the backend enforces itself
(dask-gateway dropped per-user limits in 0.7)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dask_gateway_server.models import User
from dask_gateway_server.options import Float, Options

from daskplatform.settings import ClusterSettings, GroupQuota, QuotaSettings
from daskplatform.shown import shown

GIB = 2**30

MIN_WORKER_CORES = 0.1
"""Smallest worker a user may ask for: below this a worker cannot make progress."""
MIN_WORKER_MEMORY_GB = 0.1
"""Smallest worker memory a user may ask for (Dask itself needs ~100 MB)."""


class NoPlatformGroup(Exception):
    """The user is in none of the LDAP groups that grant access to the platform."""


@dataclass(frozen=True)
class UserGroup:
    """The platform group that governs one user's clusters."""

    name: str
    quota: GroupQuota


def group_of(user: User, quotas: QuotaSettings) -> UserGroup:
    """The highest-priority platform group the user's groups grant; refuses everyone else."""
    name = quotas.group_for_ldap(set(user.groups))
    if name is None:
        raise NoPlatformGroup(
            f"user {user.name} is not in a group that grants access to Dask clusters; "
            f"ask to be added to one of: {', '.join(quotas.granting_ldap_groups())}"
        )
    return UserGroup(name, quotas.groups[name])


class Number(Float):
    """A number option that refuses what dask-gateway's Float lets through: booleans
    (``true`` became 1.0) and NaN (no bound compares against it), with both bounds in
    the message."""

    def validate(self, x: object) -> float:
        low = -math.inf if self.min is None else self.min
        high = math.inf if self.max is None else self.max
        if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x) \
                or not low <= x <= high:
            raise ValueError(f"{self.field}: must be a number from {low:g} to {high:g}, "
                             f"got {shown(x)}")
        return float(x)


class PlatformOptions(Options):
    """Options whose refusal of an unknown field lists the fields there are."""

    def parse_options(self, request: dict[str, Any]) -> dict[str, Any]:
        allowed = [f.field for f in self.fields]
        unknown = sorted(set(request) - set(allowed))
        if unknown:
            raise ValueError(f"cluster_options: unknown option {', '.join(map(shown, unknown))}"
                             f"; allowed: {', '.join(allowed)}")
        return super().parse_options(request)


def cluster_overrides(group: UserGroup, clusters: ClusterSettings, worker_cores: float,
                      worker_memory_gb: float) -> dict[str, Any]:
    """ClusterConfig values for a cluster of ``group``.

    The group's numbers count workers only, while dask-gateway's ``cluster_max_*`` also
    count the scheduler, so the scheduler's share is added here; the worker count that
    dask-gateway derives is then exactly what the group's numbers allow.
    """
    quota = group.quota
    return {
        # Given here as well as in config: traitlets applies keyword values before
        # config, and the cluster limits are checked against the scheduler's size.
        "scheduler_cores": clusters.scheduler_cores,
        "scheduler_memory": int(clusters.scheduler_memory_gb * GIB),
        "worker_cores": worker_cores,
        "worker_memory": int(worker_memory_gb * GIB),
        "cluster_max_cores": quota.cluster_max_cores + clusters.scheduler_cores,
        "cluster_max_memory": int((quota.cluster_max_memory_gb + clusters.scheduler_memory_gb)
                                  * GIB),
        "platform_group": group.name,
        "priority": quota.priority,
        "user_max_cores": quota.user_max_cores,
        "user_max_memory": int(quota.user_max_memory_gb * GIB),
        "max_clusters": quota.max_clusters,
        "notebook_cores": quota.notebook_cores,
        "notebook_memory": int(quota.notebook_memory_gb * GIB),
    }


def check_fits_a_node(worker_cores: float, worker_memory_gb: float,
                      node: tuple[float, float], instance_type: str) -> None:
    """A worker larger than a worker node would wait forever: refused at once (HTTP 422)
    with the largest worker a node takes."""
    cores, memory = node
    if worker_cores > cores + 1e-9 or worker_memory_gb > memory + 1e-9:
        raise ValueError(
            f"a worker of {worker_cores:g} cores and {worker_memory_gb:g} GB is larger than any "
            f"worker node: the largest worker a {instance_type} node holds has {cores:g} "
            f"cores and {memory:g} GB; ask for at most that (worker_cores, worker_memory)")


def posix_identity(user: User, required: bool) -> dict[str, int | None]:
    """The uid and gid the user's processes run under (PlatformUser), for the cluster's
    config; refused where the gateway runs processes as their users and has none."""
    uid, gid = getattr(user, "uid", None), getattr(user, "gid", None)
    if required and (uid is None or gid is None):
        raise ValueError(
            f"user {user.name} has no uidNumber and gidNumber in the directory, and every "
            "Dask process runs under its user's own uid; ask an admin to give the account "
            f"POSIX attributes (FreeIPA: ipa user-mod {user.name} --uid N --gidnumber N)")
    return {"platform_uid": uid, "platform_gid": gid}


def cluster_options_for(quotas: QuotaSettings, clusters: ClusterSettings,
                        node: tuple[float, float] = (math.inf, math.inf),
                        instance_type: str = "worker",
                        require_uid: bool = False) -> Callable[[User], Options]:
    """``Backend.cluster_options``: worker size fields bounded by the user's group, and a
    worker no ``node`` (cores, GB: a worker node's room) could hold refused.

    dask-gateway answers a value outside the bounds (or not a number) with HTTP 422 and
    the bounds in the message; a user in no platform group gets the NoPlatformGroup
    message instead.
    """

    def overrides(user: User, group: UserGroup, options: Any) -> dict[str, Any]:
        check_fits_a_node(options.worker_cores, options.worker_memory, node, instance_type)
        return {**cluster_overrides(group, clusters, options.worker_cores, options.worker_memory),
                **posix_identity(user, require_uid)}

    def options_for(user: User) -> Options:
        group = group_of(user, quotas)
        return PlatformOptions(
            Number("worker_cores", default=clusters.worker_cores, min=MIN_WORKER_CORES,
                   max=group.quota.cluster_max_cores, label="Worker cores"),
            Number("worker_memory", default=clusters.worker_memory_gb,
                   min=MIN_WORKER_MEMORY_GB, max=group.quota.cluster_max_memory_gb,
                   label="Worker memory (GB)"),
            handler=lambda options: overrides(user, group, options),
        )

    return options_for


class UserQuotaExceeded(Exception):
    """Starting one more worker would take a user past their group's total."""


@dataclass(frozen=True)
class Hold:
    user: str
    cores: float
    memory_bytes: int


class UserLedger:
    """Worker resources held per user across all of their clusters.

    A hold is taken before a worker is queued or placed and released when it stops, so
    concurrent starts of one user cannot together overshoot the total.
    """

    def __init__(self) -> None:
        self._holds: dict[str, Hold] = {}

    def holding(self, key: str) -> bool:
        return key in self._holds

    def usage(self, user: str) -> tuple[float, int]:
        """(cores, memory bytes) the user holds now."""
        held = [h for h in self._holds.values() if h.user == user]
        return sum(h.cores for h in held), sum(h.memory_bytes for h in held)

    def hold(self, key: str, user: str, cores: float, memory_bytes: int,
             max_cores: float | None, max_memory_bytes: int | None) -> None:
        """Record a hold, or raise UserQuotaExceeded naming the limit it would break."""
        if key in self._holds:
            return
        used_cores, used_memory = self.usage(user)
        if max_cores is not None and used_cores + cores > max_cores + 1e-9:
            raise UserQuotaExceeded(
                f"user {user} holds {used_cores:g} worker cores across their clusters; one "
                f"more worker ({cores:g} cores) would exceed the group total of "
                f"{max_cores:g} cores (quotas.groups.<group>.userMaxCores)"
            )
        if max_memory_bytes is not None and used_memory + memory_bytes > max_memory_bytes:
            raise UserQuotaExceeded(
                f"user {user} holds {used_memory / GIB:g} GB of worker memory across their "
                f"clusters; one more worker ({memory_bytes / GIB:g} GB) would exceed the "
                f"group total of {max_memory_bytes / GIB:g} GB "
                "(quotas.groups.<group>.userMaxMemoryGb)"
            )
        self._holds[key] = Hold(user, cores, memory_bytes)

    def release(self, key: str) -> None:
        self._holds.pop(key, None)
