"""A real gateway with the pool backend: clusters, quotas, options and isolation."""

from __future__ import annotations

import time

import pytest
from dask_gateway import GatewayWarning

from tests.gateway.conftest import Pool, started_pool, wait_for


@pytest.fixture
def pool(make_pool) -> Pool:
    return started_pool(make_pool, (1, 1))


def _workers(client) -> int:
    return len(client.scheduler_info(n_workers=-1)["workers"])


def test_a_user_gets_a_working_cluster_and_scale_beyond_quota_is_capped(pool: Pool) -> None:
    with pool.client("ann") as gateway:
        with gateway.new_cluster() as cluster, cluster.get_client() as client:
            cluster.scale(2)
            client.wait_for_workers(2, timeout=60)
            assert client.submit(lambda x: x + 1, 41).result(timeout=30) == 42
            # Both workers are real processes on worker nodes, packed by best fit.
            placed = {n: pool.processes(n) for n in ("work-1", "work-2")}
            assert sorted(len(p) for p in placed.values()) == [0, 2]
            assert len(pool.processes("sched-1")) == 1

            with pytest.warns(GatewayWarning, match="limit of 2 workers"):
                cluster.scale(5)
            time.sleep(3)
            assert _workers(client) == 2
    wait_for(lambda: not any(pool.processes(n) for n in pool.agents), 30,
             "processes left after shutdown")


def test_two_clusters_of_one_user_stay_within_the_user_total(pool: Pool) -> None:
    with pool.client("ann") as gateway:
        with gateway.new_cluster() as first, gateway.new_cluster() as second, \
                first.get_client() as first_client, second.get_client() as second_client:
            first.scale(1)
            first_client.wait_for_workers(1, timeout=60)
            # Within the cluster limit (2), but ann's total is 2 workers: she is told.
            with pytest.warns(GatewayWarning, match="1 of the 2 new worker.s. would pass "
                              "your group's total .quotas.groups.data_analysts"):
                second.scale(2)
            second_client.wait_for_workers(1, timeout=60)
            # The worker past the total is never even created: no start-and-refuse cycles
            # (a scheduler that keeps asking would otherwise spin them), and the total
            # stays at the group's 2 workers.
            for _ in range(3):
                workers = _workers(first_client) + _workers(second_client)
                assert workers == 2, workers
                alive = sum(len(pool.processes(n)) for n in ("work-1", "work-2"))
                assert alive == 2, alive
                time.sleep(1)
            assert pool.metrics()["capped_workers_total"] == 0
            # Another analyst is not affected by ann's usage.
            with pool.client("bob") as other, other.new_cluster() as theirs, \
                    theirs.get_client() as their_client:
                theirs.scale(2)
                their_client.wait_for_workers(2, timeout=60)


def test_options_beyond_the_group_bounds_are_refused_with_the_bound(pool: Pool) -> None:
    status, body = pool.api("POST", "/api/v1/clusters/", "ann",
                            {"cluster_options": {"worker_cores": 4}})
    assert status == 422 and "worker_cores: must be a number from 0.1 to 1, got 4" \
        in body["error"], body
    status, body = pool.api("POST", "/api/v1/clusters/", "ann",
                            {"cluster_options": {"worker_memory": 0.75}})
    assert status == 422 and "worker_memory: must be a number from 0.1 to 0.5, got 0.75" \
        in body["error"], body
    # The same values are within an admin's bounds.
    status, body = pool.api("POST", "/api/v1/clusters/", "ada",
                            {"cluster_options": {"worker_cores": 1.5, "worker_memory": 0.75}})
    assert status == 201, body
    assert pool.api("DELETE", f"/api/v1/clusters/{body['name']}", "ada")[0] == 204


def test_a_user_in_no_platform_group_is_refused_with_the_granting_groups(pool: Pool) -> None:
    status, body = pool.api("POST", "/api/v1/clusters/", "zed", {"cluster_options": {}})
    assert status == 422, body
    assert "zed is not in a group" in body["error"]
    assert "admins, data_analysts, data_engineers" in body["error"]


def test_one_user_can_neither_list_nor_connect_to_another_users_cluster(pool: Pool) -> None:
    with pool.client("ann") as gateway, gateway.new_cluster() as cluster:
        with pool.client("bob") as other:
            assert other.list_clusters() == []
            with pytest.raises(Exception, match="403"):
                other.connect(cluster.name)
            status, _ = pool.api("POST", f"/api/v1/clusters/{cluster.name}/scale", "bob",
                                 {"count": 1})
            assert status == 403
            assert pool.api("DELETE", f"/api/v1/clusters/{cluster.name}", "bob")[0] == 403
        assert [c.name for c in gateway.list_clusters()] == [cluster.name]
