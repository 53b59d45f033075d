"""The admin API against a real gateway and real Dask processes: every operation, 403
for everyone else, each change in the audit trail with the admin's name."""

from __future__ import annotations

import time

import pytest

from daskplatform import admin_cli
from daskplatform.audit import read
from tests.gateway.conftest import Pool, started_pool, wait_for

ROUTES = [("GET", "/api/v1/admin/clusters"), ("DELETE", "/api/v1/admin/clusters/x"),
          ("GET", "/api/v1/admin/queue"), ("GET", "/api/v1/admin/nodes"),
          ("POST", "/api/v1/admin/nodes/work-1/drain"),
          ("POST", "/api/v1/admin/nodes/work-1/undrain"),
          ("POST", "/api/v1/admin/users/ann/offboard"), ("POST", "/api/v1/admin/audit")]


@pytest.fixture
def pool(make_pool) -> Pool:
    return started_pool(make_pool, (0.5, 1))


def _audit(pool: Pool) -> list[dict]:
    return read(pool.tmp / "gateway" / "audit.log")


def test_every_admin_route_refuses_non_admins_with_why(pool: Pool) -> None:
    for method, path in ROUTES:
        status, answer = pool.api(method, path, "ann", {} if method == "POST" else None)
        assert status == 403, (method, path, status)
        assert "ann is not an admin" in answer["error"]
    refused = {(e["user"], e["method"], e["path"]) for e in _audit(pool)
               if e["event"] == "admin.refused"}
    assert refused == {("ann", method, path) for method, path in ROUTES}


def test_admins_list_stop_see_the_queue_and_drain_nodes(pool: Pool) -> None:
    with pool.client("ann") as gateway, gateway.new_cluster() as cluster:
        cluster.scale(1)
        wait_for(lambda: sum(len(pool.processes(n)) for n in ("work-1", "work-2")) == 1, 60,
                 "the worker did not start")
        busy = next(n for n in ("work-1", "work-2") if pool.processes(n))
        free = "work-2" if busy == "work-1" else "work-1"
        status, listing = pool.api("GET", "/api/v1/admin/clusters", "ada")
        (entry,) = listing["clusters"]
        assert (entry["name"], entry["user"], entry["group"], entry["workers"]) == (
            cluster.name, "ann", "data_analysts", 1)
        assert entry["cores"] == 0.75 and entry["memory_gb"] == 0.75  # scheduler + worker
        assert set(entry["nodes"]) == {"sched-1", busy} and entry["age_seconds"] > 0
        assert entry["idle_seconds"] is not None  # from the scheduler's own page
        assert "ann" in admin_cli.render("clusters", listing)

        # A drained node takes no new work: the next worker waits, and the queue says so.
        assert pool.api("POST", f"/api/v1/admin/nodes/{free}/drain", "ada")[0] == 200
        cluster.scale(2)
        time.sleep(3)
        assert not pool.processes(free)
        _, queue = pool.api("GET", "/api/v1/admin/queue", "ada")
        assert [(w["role"], w["user"], w["place"]) for w in queue["waiting"]] == [
            ("worker", "ann", 1)]
        _, nodes = pool.api("GET", "/api/v1/admin/nodes", "ada")
        state = {n["node_id"]: n for n in nodes["nodes"]}
        assert state[free]["drained"] and state[busy]["users"] == ["ann"]
        assert "drained" in admin_cli.render("nodes", nodes)
        assert pool.api("POST", f"/api/v1/admin/nodes/{free}/undrain", "ada")[0] == 200
        wait_for(lambda: pool.processes(free), 60, "the undrained node got no work")

        status, stopped = pool.api("DELETE", f"/api/v1/admin/clusters/{cluster.name}", "ada")
        assert (status, stopped["user"]) == (200, "ann")
        wait_for(lambda: not any(pool.processes(n) for n in pool.agents), 60,
                 "the stopped cluster's processes remain")
    assert pool.api("POST", "/api/v1/admin/nodes/no-such-node/drain", "ada")[0] == 404
    assert pool.api("DELETE", "/api/v1/admin/clusters/nope", "ada")[0] == 404
    events = [(e["event"], e["user"], e.get("by")) for e in _audit(pool)]
    assert ("admin.stop_cluster", "ann", "ada") in events
    assert ("admin.drain", "ada", None) in events and ("cluster.start", "ann", None) in events
    assert ("cluster.scale", "ann", None) in events


def test_offboarding_stops_the_users_work_and_the_trail_takes_admin_steps(pool: Pool) -> None:
    with pool.client("ann") as gateway:
        gateway.new_cluster(shutdown_on_close=False)
        status, stopped = pool.api("POST", "/api/v1/admin/users/ann/offboard", "ada", {})
        assert status == 200 and len(stopped["clusters_stopped"]) == 1
        wait_for(lambda: gateway.list_clusters() == [], 60, "ann's cluster still runs")
    status, line = pool.api("POST", "/api/v1/admin/audit", "ada",
                            {"event": "user.home_archived", "user": "ann", "key": "k"})
    assert (status, line["by"], line["key"]) == (201, "ada", "k")
    for bad in ({"event": "cluster.start", "user": "ann"}, {"event": "user.x", "user": "../x"},
                {"event": "user.x", "user": "ann", "nested": {"a": 1}}):
        assert pool.api("POST", "/api/v1/admin/audit", "ada", bad)[0] == 422, bad
    assert pool.api("POST", "/api/v1/admin/audit", "ada", [])[0] == 400
    assert ("user.work_stopped", "ann", "ada") in [
        (e["event"], e["user"], e.get("by")) for e in _audit(pool)]
