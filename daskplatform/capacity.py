"""The capacity model of a stack's settings: how many clusters, notebooks and workers the
platform holds at once, and what the pool offers at its bounds (``./dev plan`` prints
it; docs/capacity.md explains it). Pure: settings in, figures out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from daskplatform.settings import PlatformSettings, node_capacity, scheduler_slots


@dataclass(frozen=True)
class GroupCapacity:
    name: str
    workers_at_full_quota: int
    """Default workers one member may hold over all their clusters (the group total)."""
    users_at_full_quota: int
    """Members the pool at its maximum holds with every one at their full total."""
    notebook_slots: tuple[int, int]
    """This group's notebook servers the pool holds at (min, max) nodes, alone."""


@dataclass(frozen=True)
class CapacityModel:
    expected_users: int
    scheduler_host: str
    concurrent_clusters: int
    scheduler_cpu_overcommit: float
    """Sum of the schedulers' CPU limits over the host's cores, when it is full."""
    scheduler_memory_overcommit: float
    worker_node: str
    workers_per_node: int
    pool_nodes: tuple[int, int]
    pool_cores: tuple[float, float]
    pool_memory_gb: tuple[float, float]
    pool_workers: tuple[int, int]
    groups: tuple[GroupCapacity, ...]


def _whole(count: float) -> int:
    return int(math.floor(count + 1e-9))


def capacity_model(settings: PlatformSettings) -> CapacityModel:
    clusters, workers = settings.clusters, settings.workers
    host_cores, host_memory = node_capacity(settings.scheduler, clusters)
    slots = scheduler_slots(settings.scheduler, clusters)
    node_cores, node_memory = node_capacity(workers, clusters)
    per_node = _whole(min(node_cores / clusters.worker_cores,
                          node_memory / clusters.worker_memory_gb))
    nodes = (workers.min, workers.max)
    groups = []
    for name, quota in settings.quotas.groups.items():
        full = _whole(min(quota.user_max_cores / clusters.worker_cores,
                          quota.user_max_memory_gb / clusters.worker_memory_gb))
        per_node_notebooks = _whole(min(node_cores / quota.notebook_cores,
                                        node_memory / quota.notebook_memory_gb))
        groups.append(GroupCapacity(
            name, full, _whole(per_node * workers.max / full) if full else 0,
            (per_node_notebooks * nodes[0], per_node_notebooks * nodes[1])))
    return CapacityModel(
        expected_users=settings.expected_concurrent_users,
        scheduler_host=settings.scheduler.instance_type,
        concurrent_clusters=slots,
        scheduler_cpu_overcommit=slots * clusters.scheduler_cpu_limit / host_cores,
        scheduler_memory_overcommit=slots * clusters.scheduler_memory_limit_gb / host_memory,
        worker_node=workers.instance_type,
        workers_per_node=per_node,
        pool_nodes=nodes,
        pool_cores=(node_cores * nodes[0], node_cores * nodes[1]),
        pool_memory_gb=(node_memory * nodes[0], node_memory * nodes[1]),
        pool_workers=(per_node * nodes[0], per_node * nodes[1]),
        groups=tuple(groups),
    )


def render(model: CapacityModel) -> str:
    """The model as ``./dev plan`` prints it."""
    low, high = model.pool_nodes
    lines = [
        "Capacity (docs/capacity.md):",
        f"  concurrent clusters: {model.concurrent_clusters} on a {model.scheduler_host} "
        f"scheduler host, for {model.expected_users} expected users (schedulers burst to "
        f"{model.scheduler_cpu_overcommit:.1f}x the host's cores and "
        f"{model.scheduler_memory_overcommit:.1f}x its memory when all burst at once)",
        f"  worker pool: {low}..{high} x {model.worker_node}, "
        f"{model.pool_cores[0]:g}..{model.pool_cores[1]:g} cores, "
        f"{model.pool_memory_gb[0]:g}..{model.pool_memory_gb[1]:g} GB, "
        f"{model.pool_workers[0]}..{model.pool_workers[1]} default workers "
        f"({model.workers_per_node} per node)",
    ]
    for group in model.groups:
        lines.append(
            f"  {group.name}: {group.workers_at_full_quota} default workers at full quota; "
            f"{group.users_at_full_quota} members at full quota fill the pool at its max; "
            f"notebook slots {group.notebook_slots[0]}..{group.notebook_slots[1]} "
            "(pool at min..max, notebooks alone)")
    return "\n".join(lines) + "\n"
