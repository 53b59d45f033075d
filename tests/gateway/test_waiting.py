"""When the pool is full, everything waits in line and says why: clusters for the
scheduler host by group priority, with their place visible; one user cannot hold more
clusters than their group allows; a request no node could hold is refused at once;
room a stopped cluster frees is usable at once; a hung node agent is found out."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.gateway.conftest import Pool, small_settings, wait_for

SCHEDULER = (0.25, 0.5)
"""(cores, GB) of one test scheduler (tests/gateway/conftest.small_settings)."""


@pytest.fixture
def pool(make_pool) -> Pool:
    """A scheduler host with room for exactly one scheduler."""
    pool = make_pool()
    pool.add_agent("wait-sched", "scheduler", cores=SCHEDULER[0], memory_gb=SCHEDULER[1])
    pool.add_agent("wait-work", "worker", cores=1, memory_gb=1)
    pool.start_gateway()
    return pool


def status(pool: Pool, user: str) -> dict:
    code, body = pool.api("GET", "/api/v1/status", user)
    assert code == 200, body
    return body


def by_name(pool: Pool, user: str) -> dict[str, dict]:
    return {c["name"]: c for c in status(pool, user)["clusters"]}


def test_clusters_wait_for_the_scheduler_host_by_priority_and_say_where_they_stand(
        pool: Pool) -> None:
    with pool.client("ann") as ann, pool.client("bob") as bob, pool.client("ada") as ada:
        first = ann.new_cluster(shutdown_on_close=False)
        # The host is full: the next clusters wait, they do not fail.
        bobs = bob.submit()
        time.sleep(1)
        adas = ada.submit()
        wait_for(lambda: by_name(pool, "ada").get(adas, {}).get("waiting"), 20,
                 "ada's cluster is not shown waiting")
        assert by_name(pool, "bob")[bobs]["waiting"] == (
            "waiting for room on the scheduler host: 2 of 2 in line (data_analysts; served "
            "by group priority, then in order of arrival)")
        assert by_name(pool, "ada")[adas]["waiting"].startswith(
            "waiting for room on the scheduler host: 1 of 2 in line (admins;")
        # The same in the report the dask_gateway client returns.
        (report,) = [c for c in bob.list_clusters() if c.name == bobs]
        assert report.options["platform_status"].startswith("waiting for room on the "
                                                           "scheduler host: 2 of 2")
        # Only admins see other users' clusters.
        assert set(by_name(pool, "bob")) == {bobs}
        assert {first.name, bobs, adas} <= set(by_name(pool, "ada"))
        assert status(pool, "ada")["pool"]["waiting_clusters"] == 2
        # Room frees: the admin, second to come, starts first.
        first.shutdown()
        adas_cluster = ada.connect(adas)
        assert by_name(pool, "bob")[bobs]["waiting"].startswith(
            "waiting for room on the scheduler host: 1 of 1")
        adas_cluster.shutdown()
        bobs_cluster = bob.connect(bobs)
        bobs_cluster.shutdown()


def test_room_is_usable_as_soon_as_a_stop_is_accepted(pool: Pool) -> None:
    """A create right after a delete is placed at once, not refused or queued behind the
    process that is still stopping."""
    with pool.client("ann") as ann:
        first = ann.new_cluster(shutdown_on_close=False)
        ann.stop_cluster(first.name)
        started = time.monotonic()
        second = ann.new_cluster(shutdown_on_close=False)
        assert time.monotonic() - started < 30
        second.shutdown()


def test_a_user_at_their_cluster_limit_is_told_how_to_go_on(pool: Pool) -> None:
    with pool.client("bob") as bob:
        names = [bob.submit(), bob.submit()]  # data_analysts may hold 2 (one waits)
        with pytest.raises(ValueError, match=r"user bob already holds 2 cluster\(s\) .*the "
                           r"most a member of data_analysts may hold at once "
                           r"\(quotas.groups.data_analysts.maxClusters = 2\); stop one "
                           r"first: cluster.shutdown\(\)"):
            bob.submit()
        for name in names:
            bob.stop_cluster(name)
        bob.stop_cluster(bob.submit())  # room again


def test_a_worker_no_node_could_hold_is_refused_at_once(make_pool) -> None:
    """An engineer may ask for 4-core / 8 GB workers, which no c5.large node holds: the
    request is refused at once, naming the largest worker a node takes."""
    settings = small_settings()
    groups = dict(settings.quotas.groups)
    groups["admins"] = groups["admins"].model_copy(update={
        "cluster_max_cores": 8, "cluster_max_memory_gb": 16, "user_max_cores": 8,
        "user_max_memory_gb": 16})
    pool = make_pool(settings.model_copy(update={
        "quotas": settings.quotas.model_copy(update={"groups": groups})}))
    pool.add_agent("big-sched", "scheduler", cores=1, memory_gb=1)
    pool.start_gateway()
    code, body = pool.api("POST", "/api/v1/clusters/", "ada",
                          {"cluster_options": {"worker_cores": 4, "worker_memory": 8}})
    assert code == 422, body
    assert ("a worker of 4 cores and 8 GB is larger than any worker node: the largest worker "
            "a c5.large node holds has 2 cores and 3.5 GB; ask for at most that") \
        in body["error"]
    code, body = pool.api("POST", "/api/v1/clusters/", "ada",
                          {"cluster_options": {"worker_cores": 2, "worker_memory": 3.5}})
    assert code == 201, body  # exactly a node's room is fine
    pool.api("DELETE", f"/api/v1/clusters/{body['name']}", "ada")


def test_a_hung_agent_is_lost_and_its_work_goes_elsewhere(make_pool) -> None:
    pool = make_pool()
    pool.add_agent("hang-sched", "scheduler", cores=1, memory_gb=1)
    pool.add_agent("hang-w1", "worker", cores=0.5, memory_gb=0.25)
    pool.add_agent("hang-w2", "worker", cores=0.5, memory_gb=0.25)
    pool.start_gateway()
    with pool.client("ann") as ann, ann.new_cluster() as cluster, \
            cluster.get_client(set_as_default=False) as client:
        cluster.scale(1)
        client.wait_for_workers(1, timeout=60)
        hung = next(n for n in ("hang-w1", "hang-w2") if pool.processes(n))
        agent = pool.agents[hung]
        os.kill(agent.process.pid, signal.SIGSTOP)  # answers nothing, never closes a socket
        try:
            wait_for(lambda: any(n["node_id"] == hung and n["lost"]
                                 for n in pool.metrics()["nodes"]), 60,
                     f"{hung} was never marked lost")
            other = "hang-w2" if hung == "hang-w1" else "hang-w1"
            wait_for(lambda: pool.processes(other), 60, "the worker did not move")
        finally:
            os.kill(agent.process.pid, signal.SIGCONT)


def test_a_second_cluster_while_the_first_waits_is_not_failed(pool: Pool) -> None:
    """Waiting is not failing: a queued cluster outlives the gateway's start timeout for
    a placed one (cluster_connect_timeout is 60 s in these tests; it waits here)."""
    with pool.client("ann") as ann, pool.client("bob") as bob:
        first = ann.new_cluster(shutdown_on_close=False)
        waiting = bob.submit()
        time.sleep(3)
        assert by_name(pool, "bob")[waiting]["status"] == "SUBMITTED"
        first.shutdown()
        bob.connect(waiting).shutdown()  # raises GatewayClusterError had it failed
