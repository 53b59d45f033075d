"""The clusters.* Dask tuning reaches the schedulers and workers the gateway starts: the
live objects inside them run with the settings' values (not Dask's defaults), workers
keep their scratch space in their directory under the node agent's workdir, and the
gateway reads each worker's memory from its scheduler."""

from __future__ import annotations

import math
import sys
from typing import Any

import cloudpickle
import dask
from distributed import Nanny, Scheduler, Worker

from daskplatform.gateway.dask_config import dask_config, dask_env, max_spill_config
from daskplatform.gateway.dask_config import spill_disk_per_memory as spill_ratio
from daskplatform.gateway.quotas import GIB
from daskplatform.settings import ClusterSettings, RuntimeSettings
from tests.gateway.conftest import WORKER, Pool, small_settings, wait_for

TUNED: dict[str, Any] = {
    "worker_memory_target": 0.55, "worker_memory_spill": 0.65, "worker_memory_pause": 0.72,
    "worker_memory_terminate": 0.85, "node_spill_disk_gb": 10, "scheduler_allowed_failures": 1,
    "scheduler_work_stealing": False, "scheduler_worker_saturation": 1.25}
"""Every tuning value away from Dask's default and the platform's, so a value that did
not arrive cannot pass for one that did."""

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Dask processes lack tests/


def tuned_settings() -> RuntimeSettings:
    base = small_settings()
    clusters = ClusterSettings(**{**base.clusters.model_dump(), **TUNED})
    return base.model_copy(update={"clusters": clusters})


def test_the_environment_is_what_dask_reads_back() -> None:
    """dask_env's variables, parsed by dask itself, give back every value."""
    config = dask.config.merge(dask_config(ClusterSettings(**TUNED)), max_spill_config(123))
    env = dask_env(config)
    assert env["DASK_DISTRIBUTED__WORKER__MEMORY__MAX_SPILL"] == "123"
    merged = dask.config.merge(dask.config.defaults[0], dask.config.collect_env(env))
    memory = "distributed.worker.memory."
    scheduler = "distributed.scheduler."
    expected = {memory + "target": 0.55, memory + "spill": 0.65, memory + "pause": 0.72,
                memory + "terminate": 0.85, memory + "max-spill": 123,
                scheduler + "allowed-failures": 1, scheduler + "work-stealing": False,
                scheduler + "worker-saturation": 1.25}
    assert {key: dask.config.get(key, config=merged) for key in expected} == expected


def _worker_view(dask_worker: Worker) -> dict[str, Any]:
    manager = dask_worker.memory_manager
    with open("/proc/self/environ", "rb") as fh:  # what glibc read when it started
        at_exec = fh.read().split(b"\0")
    return {"target": manager.memory_target_fraction, "spill": manager.memory_spill_fraction,
            "pause": manager.memory_pause_fraction, "max_spill": manager.max_spill,
            "threads": dask_worker.state.nthreads,
            "malloc_trim": b"MALLOC_TRIM_THRESHOLD_=65536" in at_exec,
            "local_directory": dask_worker.local_directory}


def _nanny_view(dask_worker: Nanny) -> float:
    return dask_worker.memory_manager.memory_terminate_fraction


def _scheduler_view(dask_scheduler: Scheduler) -> dict[str, Any]:
    return {"allowed_failures": dask_scheduler.allowed_failures,
            "saturation": dask_scheduler.WORKER_SATURATION,
            "stealing": "stealing" in dask_scheduler.extensions}


def test_gateway_processes_run_with_the_settings_dask_config(make_pool) -> None:
    settings = tuned_settings()
    pool: Pool = make_pool(settings)
    pool.add_agent("sched-1", "scheduler", cores=1, memory_gb=1)
    pool.add_agent("work-1", "worker", cores=1, memory_gb=1)
    pool.start_gateway()
    with pool.client("ann") as gateway, gateway.new_cluster() as cluster, \
            cluster.get_client() as client:
        cluster.scale(1)
        client.wait_for_workers(1, timeout=60)
        (worker,) = client.run(_worker_view).values()
        (terminate,) = client.run(_nanny_view, nanny=True).values()
        on_scheduler = client.run_on_scheduler(_scheduler_view)
        (process,) = pool.processes("work-1")
        held = client.submit(bytes, 8 << 20, pure=False)  # some managed memory
        held.result()
        listed = wait_for(lambda: _listed_workers(pool, cluster.name), 20,
                          "the gateway never listed the worker's memory")

    assert worker.pop("local_directory").startswith(
        str(pool.tmp / "agent-work-1" / "procs" / process["id"]) + "/")
    assert worker == {"target": 0.55, "spill": 0.65, "pause": 0.72,
                      "max_spill": int(spill_ratio(settings) * WORKER[1] * GIB),
                      "threads": max(1, math.floor(WORKER[0])), "malloc_trim": True}
    assert terminate == 0.85
    assert on_scheduler == {"allowed_failures": 1, "saturation": 1.25, "stealing": False}
    (figures,) = listed
    assert figures["managed"] >= 8 << 20 and figures["unmanaged"] > 0
    assert figures["spilled"] == 0


def _listed_workers(pool: Pool, cluster: str) -> list[dict[str, Any]]:
    """``GET /api/v1/pool/workers`` for one cluster, once its worker reports its data."""
    status, body = pool.api("GET", "/api/v1/pool/workers", "ann")
    assert status == 200, body
    mine = [w for w in body["workers"] if w["cluster"] == cluster]
    return mine if mine and mine[0]["managed"] >= 8 << 20 else []


def test_spill_share_is_the_node_disk_split_by_memory() -> None:
    """A c5.large offers 3.5 GB after the reserve: 16 GB of spill disk is 16/3.5 bytes per
    byte of memory, so the node's workers together never spill more than 16 GB."""
    assert spill_ratio(RuntimeSettings()) == 16 / 3.5
