"""The gateway against what really runs: it re-adopts the processes its database
records, stops after a grace period the ones no record explains (a lost database), and
keeps a cluster's processes on one runtime version while nodes run several (a roll-out).
Real agents, real Dask, a real dask-gateway-server."""

from __future__ import annotations

import time

from daskplatform.rollout_cli import outcome
from daskplatform.runtime_version import VERSION_ENV
from tests.gateway.conftest import Pool, wait_for

OLD, NEW = "aaaaaaaaaaaa", "bbbbbbbbbbbb"


def _alive(pool: Pool) -> int:
    return sum(len(pool.processes(n)) for n in pool.agents)


def test_a_lost_database_leaves_orphans_that_are_found_and_stopped_after_the_grace(
        make_pool) -> None:
    pool: Pool = make_pool()
    pool.add_agent("sched-1", "scheduler", cores=1, memory_gb=1)
    pool.add_agent("work-1", "worker", cores=1, memory_gb=1)
    pool.start_gateway(db=True, extra_config="c.PoolBackend.orphan_grace = 4\n")
    with pool.client("ann") as gateway, gateway.new_cluster(shutdown_on_close=False) as cluster:
        cluster.scale(1)
        with cluster.get_client() as client:
            client.wait_for_workers(1, timeout=60)
    assert _alive(pool) == 2
    log = pool.tmp / "gateway.log"

    pool.gateway.stop()  # a restart with the database: everything is re-adopted
    pool.start_gateway()
    wait_for(lambda: log.read_text().count("as recorded: re-adopted") == 2, 20,
             "the restarted gateway did not re-adopt both processes")
    time.sleep(5)  # longer than the grace: nothing recorded is ever an orphan
    assert _alive(pool) == 2 and "is in no record" not in log.read_text()

    pool.gateway.stop()
    (pool.tmp / "gateway.sqlite").unlink()  # the database is lost
    pool.gateway.start()
    found = wait_for(lambda: log.read_text().count("is in no record of this gateway") == 2,
                     20, "the orphans were not found")
    assert found and _alive(pool) == 2  # not at once: a record may still claim them
    started = time.monotonic()
    wait_for(lambda: _alive(pool) == 0, 30, "the orphans were not stopped")
    assert time.monotonic() - started <= 4 + 15
    text = log.read_text()
    assert text.count("Reconcile: stopping orphan") == 2
    assert text.count("stopped") >= 2
    with pool.client("ann") as gateway:
        assert gateway.list_clusters() == []


def test_a_cluster_gets_workers_only_on_its_own_runtime_version(make_pool) -> None:
    pool: Pool = make_pool(env={VERSION_ENV: OLD})
    pool.add_agent("sched-1", "scheduler", cores=1, memory_gb=1)
    # work-a sorts first and is the best fit otherwise; it runs another version.
    pool.add_agent("work-a", "worker", cores=1, memory_gb=1, env={VERSION_ENV: NEW})
    pool.add_agent("work-b", "worker", cores=1, memory_gb=1)
    pool.start_gateway()
    with pool.client("ann") as gateway, gateway.new_cluster() as cluster:
        cluster.scale(1)
        with cluster.get_client() as client:
            client.wait_for_workers(1, timeout=60)
            assert client.submit(lambda: 6 * 7).result(timeout=30) == 42
        assert len(pool.processes("work-b")) == 1 and pool.processes("work-a") == []
        status, body = pool.api("GET", "/api/v1/status", "ada")
        assert status == 200, body
        runtime = body["runtime"]
        assert runtime["mixed"] and runtime["gateway"] == OLD
        assert runtime["nodes"] == {OLD: {"scheduler": 1, "worker": 1}, NEW: {"worker": 1}}
        assert [c["runtime_version"] for c in body["clusters"]] == [OLD]


def test_a_rollout_drains_busy_workers_and_says_why_a_node_did_not_upgrade(
        make_pool) -> None:
    pool: Pool = make_pool(env={VERSION_ENV: OLD})
    pool.add_agent("sched-1", "scheduler", cores=1, memory_gb=1)
    pool.add_agent("work-1", "worker", cores=1, memory_gb=1)
    pool.start_gateway()
    assert pool.api("POST", "/api/v1/rollout", "ann", {"version": NEW})[0] == 403
    with pool.client("ann") as gateway, gateway.new_cluster() as cluster:
        cluster.scale(1)
        with cluster.get_client() as client:
            client.wait_for_workers(1, timeout=60)
        status, report = pool.api("POST", "/api/v1/rollout", "ada", {"version": NEW})
        assert status == 202 and report["version"] == NEW, report

        def settled() -> dict | None:
            found = pool.api("GET", "/api/v1/rollout", "ann")[1]
            nodes = found["nodes"]
            return found if {n: e["state"] for n, e in nodes.items()} == {
                "sched-1": "failed", "work-1": "draining"} else None

        report = wait_for(settled, 60, "the roll-out did not drain and try the nodes")
        # The busy worker node keeps its work; it is drained, naming whose work it holds.
        assert report["nodes"]["work-1"]["holding"] == ["ann"]
        assert len(pool.processes("work-1")) == 1
        # This machine is no host installed by user data: the upgrade says so, and the
        # node keeps serving its version.
        assert "install.json" in report["nodes"]["sched-1"]["message"]
        status, body = pool.api("POST", "/api/v1/rollout", "ada", {"version": "cccccccccccc"})
        assert status == 409 and "under way" in body["error"]
        status, body = pool.api("GET", "/api/v1/status", "ada")
        assert [n["draining"] for n in body["runtime"]["node_list"]
                if n["node_id"] == "work-1"] == [True]



def test_rollout_watch_waits_for_stuck_nodes_the_first_call_stops_at() -> None:
    """`dask-platform rollout` stops at nodes held by users' work (it never stops it);
    `--watch` waits for them, since they upgrade once their users' clusters stop."""
    report = {"done": False, "gateway": {"state": "done"},
              "nodes": {"a": {"state": "stuck"}, "b": {"state": "done"}}}
    assert outcome(report) == 1 and outcome(report, wait_stuck=True) is None
    report["nodes"]["a"] = {"state": "failed"}
    assert outcome(report) == outcome(report, wait_stuck=True) == 1
    assert outcome({**report, "done": True}, wait_stuck=True) == 0
