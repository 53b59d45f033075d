"""The gateway's notebook API without a hub: placement on worker nodes, the priority line
when the pool is full, refusals that say what to do. (The hub's side, a real JupyterLab,
culling and clusters stopping with their notebook: test_hub_host.py, test_browser.py.)"""

from __future__ import annotations

import pytest

from daskplatform import status_cli
from tests.gateway.conftest import Pool, wait_for

ENV = {"JUPYTERHUB_SERVICE_PREFIX": "/user/x/"}
"""No hub here: the server exits soon after it starts, which these tests do not need."""


@pytest.fixture
def pool(make_pool) -> Pool:
    pool = make_pool()
    pool.add_agent("sched-1", "scheduler", cores=2, memory_gb=2)
    pool.add_agent("work-1", "worker", cores=0.5, memory_gb=1)
    pool.start_gateway()
    return pool


def test_bad_start_requests_are_refused_with_what_is_allowed(pool: Pool) -> None:
    for body, expected, problem in (
            ({"env": {"PATH": "/tmp/evil"}}, 422, "JUPYTERHUB_* or DASK_GATEWAY_*"),
            ({"env": {"JUPYTERHUB_X": 1}}, 422, "each a string"),
            ({"env": "x"}, 422, 'env: must be an object {NAME: "value", ...}, got "x"'),
            ({"env": {}, "image": "x"}, 422, "image: unknown field; allowed: env"),
            ([], 400, "body: must be a JSON object, got an array")):
        status, answer = pool.api("POST", "/api/v1/notebook", "ann", body)
        assert status == expected and problem in answer["error"], (body, answer)
    status, answer = pool.api("POST", "/api/v1/notebook", "zed", {"env": ENV})
    assert status in (403, 422) and "group" in answer["error"]
    assert pool.api("GET", "/api/v1/notebook", "ann")[0] == 404


def test_notebooks_wait_in_the_worker_line_by_priority_and_start_when_room_frees(
        pool: Pool) -> None:
    with pool.client("ann") as gateway, gateway.new_cluster() as cluster:
        cluster.scale(2)  # the node holds one 0.5-core worker; the other waits
        wait_for(lambda: len(pool.processes("work-1")) == 1, 60, "worker did not start")
        assert pool.api("POST", "/api/v1/notebook", "bob", {"env": ENV})[0] == 201
        assert pool.api("POST", "/api/v1/notebook", "eve", {"env": ENV})[0] == 201
        status, again = pool.api("POST", "/api/v1/notebook", "bob", {"env": ENV})
        assert status == 409 and "already has a notebook server" in again["error"]
        _, bob = pool.api("GET", "/api/v1/notebook", "bob")
        _, eve = pool.api("GET", "/api/v1/notebook", "eve")
        assert (bob["status"], eve["status"]) == ("waiting", "waiting")
        # Engineers before analysts (ann's second worker came before bob); each sees
        # their place and group.
        assert "waiting for room in the worker pool: 1 of 3 in line (data_engineers" \
            in eve["message"]
        assert "3 of 3 in line (data_analysts" in bob["message"]
        _, status = pool.api("GET", "/api/v1/status", "bob")  # dask-platform status
        assert "your notebook server: waiting (waiting for room in the worker pool: 3 of 3" \
            in status_cli.render(status)
        cluster.scale(0)
        wait_for(lambda: pool.api("GET", "/api/v1/notebook", "eve")[1]["status"] != "waiting",
                 60, "eve's notebook was not placed once the worker stopped")
    _, eve = pool.api("GET", "/api/v1/notebook", "eve")
    assert eve["node"] == "work-1"
    assert pool.api("DELETE", "/api/v1/notebook", "eve")[0] == 204
    assert pool.api("DELETE", "/api/v1/notebook", "bob")[0] == 204
    _, bob = pool.api("GET", "/api/v1/notebook", "bob")
    assert bob["status"] == "stopped"
    wait_for(lambda: not pool.processes("work-1"), 30, "a notebook outlived its stop")
