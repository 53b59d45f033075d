"""A full pool: worker requests wait by group priority, then arrival; the per-user
pending cap holds."""

from __future__ import annotations

from tests.gateway.conftest import WORKER, Pool, small_settings, wait_for


def _workers(client) -> int:
    return len(client.scheduler_info(n_workers=-1)["workers"])


def test_full_pool_serves_admins_first_and_caps_pending_per_user(make_pool) -> None:
    pool: Pool = make_pool(small_settings(max_pending_per_user=1))
    pool.add_agent("sched-1", "scheduler", cores=2, memory_gb=2)
    pool.add_agent("work-1", "worker", cores=WORKER[0], memory_gb=WORKER[1])  # one worker
    pool.start_gateway()
    with pool.client("eve") as eve, pool.client("ann") as ann, pool.client("ada") as ada, \
            eve.new_cluster() as eve_cluster, ann.new_cluster() as ann_cluster, \
            ada.new_cluster() as ada_cluster, eve_cluster.get_client() as eve_client, \
            ann_cluster.get_client() as ann_client, ada_cluster.get_client() as ada_client:
        eve_cluster.scale(1)
        eve_client.wait_for_workers(1, timeout=60)

        ann_cluster.scale(2)  # the pool is full: one waits, one is beyond ann's cap of 1
        wait_for(lambda: pool.metrics()["pending_workers"] == 1, 20, "ann's worker not queued")
        wait_for(lambda: pool.metrics()["capped_workers_total"] >= 1, 20,
                 "ann's second pending worker was not refused")

        ada_cluster.scale(1)  # later than ann, but admins come first
        wait_for(lambda: pool.metrics()["pending_workers"] == 2, 20, "ada's worker not queued")

        eve_cluster.scale(0)  # frees the only slot
        wait_for(lambda: _workers(ada_client) == 1, 60, "ada's worker was not placed first")
        assert _workers(ann_client) == 0
        assert pool.metrics()["pending_workers"] == 1

        ada_cluster.scale(0)
        wait_for(lambda: _workers(ann_client) == 1, 60, "ann's worker was not placed next")
        assert pool.metrics()["pending_workers"] == 0
