"""The Dask config of every scheduler and worker the platform starts, from the
``clusters.*`` settings (docs/dask-tuning.md).

It travels as ``DASK_*`` environment variables, which dask reads at import, and which
the node agent's warm children re-read (``dask.config.refresh()``) after taking their
environment: one mechanism for local mode, the rehearsal and AWS alike. Where spill
files go is the node agent's business (its per-process directory on local disk).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from daskplatform.settings import ClusterSettings, RuntimeSettings, node_capacity

ENV_PREFIX = "DASK_"


def dask_config(clusters: ClusterSettings) -> dict[str, Any]:
    """Nested Dask config, as ``dask.config.get`` reads it, for schedulers and workers."""
    return {"distributed": {
        "worker": {"memory": {
            "target": clusters.worker_memory_target,
            "spill": clusters.worker_memory_spill,
            "pause": clusters.worker_memory_pause,
            "terminate": clusters.worker_memory_terminate,
        }},
        "scheduler": {
            "allowed-failures": clusters.scheduler_allowed_failures,
            "work-stealing": clusters.scheduler_work_stealing,
            "worker-saturation": clusters.scheduler_worker_saturation,
        },
    }}


def max_spill_config(max_spill_bytes: int) -> dict[str, Any]:
    """One worker's cap on spilled bytes; past it, Dask keeps data in memory (and pauses)."""
    return {"distributed": {"worker": {"memory": {"max-spill": max_spill_bytes}}}}


def spill_disk_per_memory(settings: RuntimeSettings) -> float:
    """Spill bytes a worker may write per byte of its memory: its share, by memory, of
    ``clusters.nodeSpillDiskGb``. A node's workers never hold more memory than the node
    offers, so together they never spill more than that."""
    _, node_memory_gb = node_capacity(settings.workers, settings.clusters)
    return settings.clusters.node_spill_disk_gb / node_memory_gb


def dask_env(config: Mapping[str, Any]) -> dict[str, str]:
    """``DASK_A__B_C=value`` variables for nested config ``{"a": {"b-c": value}}``.

    Values are Python literals, which dask parses back with ``ast.literal_eval``; dask
    treats ``-`` and ``_`` in keys alike.
    """
    env: dict[str, str] = {}

    def walk(prefix: str, node: Mapping[str, Any]) -> None:
        for key, value in node.items():
            name = prefix + key.upper().replace("-", "_")
            if isinstance(value, Mapping):
                walk(name + "__", value)
            else:
                env[name] = repr(value)

    walk(ENV_PREFIX, config)
    return env
