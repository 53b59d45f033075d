"""Best-fit placement of one Dask process on the pool (pure: no I/O).

Best fit packs processes onto the fullest node that still has room, so lightly used
nodes drain and the Auto Scaling group can remove them when CPU is low.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class NodeRoom:
    """What one node can still take, after its processes and pending reservations."""

    node_id: str
    role: str
    free_cores: float
    free_memory_gb: float
    version: str = ""
    """The runtime version the node's agent runs (what a process started there runs)."""


_EPSILON = 1e-9


def best_fit(nodes: Iterable[NodeRoom], role: str, cores: float,
             memory_gb: float, version: str = "") -> str | None:
    """The node of ``role`` left with the least room after taking the request, or None.
    With ``version``, only nodes on that runtime version (a worker joins a scheduler
    of its own version, never another).

    Room left is compared by memory first (the scarcer resource on c5 nodes), then
    cores, then node id, so the choice is deterministic.
    """
    candidates = [
        (node.free_memory_gb - memory_gb, node.free_cores - cores, node.node_id)
        for node in nodes
        if node.role == role
        and (not version or node.version == version)
        and node.free_cores + _EPSILON >= cores
        and node.free_memory_gb + _EPSILON >= memory_gb
    ]
    return min(candidates)[2] if candidates else None
