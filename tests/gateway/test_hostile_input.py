"""Hostile and malformed input to the gateway's API (issue 14), against a real gateway
with the LDAP authenticator (real slapd), real node agents and a running cluster: each
case found by hand answers a clear 4xx, generated input never gets a 5xx, a refused
request creates or stops nothing, and afterwards the gateway still serves and a normal
cluster starts and computes."""

from __future__ import annotations

import base64
import json
import os
import secrets
import stat
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from dask_gateway import BasicAuth, Gateway
from hypothesis import strategies as st

from daskplatform.gateway.server import LDAP_AUTHENTICATOR
from daskplatform.identity.slapd import Slapd
from tests.gateway.conftest import Pool, new_pool, small_settings, wait_for
from tests.hostile import (
    Answer,
    Call,
    assert_refused,
    basic,
    bodies,
    calls,
    dump,
    either,
    fuzz,
    objects,
    path_parts,
    query_values,
    resolve,
    send,
)

USER, PASSWORD = "engineer1", "engineer1-demo"
"""A data engineer of the demo directory: 1 core / 0.5 GB per cluster in small_settings."""

CREATE = "POST /api/v1/clusters/"
CLUSTER = "GET /api/v1/clusters/{cluster_name}"
DELETE = "DELETE /api/v1/clusters/{cluster_name}"
SCALE = "POST /api/v1/clusters/{cluster_name}/scale"
ADAPT = "POST /api/v1/clusters/{cluster_name}/adapt"
HEARTBEAT = "POST /api/v1/clusters/{cluster_name}/heartbeat"
ROUTES = ("GET /api/health", "GET /api/version", "GET /api/v1/options", "GET /api/v1/pool",
          "GET /api/v1/clusters/", CREATE, CLUSTER, DELETE, SCALE, ADAPT, HEARTBEAT)
"""dask-gateway-server's routes (routes.py) and the pool backend's /api/v1/pool."""

EXAMPLES = 1100
"""Generated calls over all routes (about 100 a route): some 20 s on 2 cores."""

AS_USER = (("Authorization", b"{basic}"), ("Content-Type", b"application/json"))


def _post(route: str, body: bytes, auth: tuple[tuple[str, bytes], ...] = AS_USER) -> Call:
    path = route.split(" ", 1)[1].replace("{cluster_name}", "{cluster}")
    return Call(route, path, auth, body)


def _get_options(authorization: bytes) -> Call:
    return Call("GET /api/v1/options", "/api/v1/options", (("Authorization", authorization),))


NOT_AN_OBJECT = [
    (b"[]", "body: must be a JSON object, got an array"),
    (b'"cluster"', "body: must be a JSON object, got a string"),
    (b'{"count": ', "body: not valid JSON"),
    (b"", "body: must be a JSON object, got an empty body"),
]
BARE_HUB = (("Authorization", b"jupyterhub"),)
AUTHORIZATION = "Authorization: must be 'Basic <base64 of user:password>'"
WHY = [
    *[pytest.param(_post(route, body), 400, message, id=f"{route}-{body!r}")
      for route in (CREATE, SCALE, ADAPT) for body, message in NOT_AN_OBJECT],
    pytest.param(_post(CREATE, b'{"cluster_options": {"worker_cores": NaN}}'), 422,
                 "worker_cores: must be a number from 0.1 to 1, got NaN", id="cores-nan"),
    pytest.param(_post(CREATE, b'{"cluster_options": {"worker_memory": true}}'), 422,
                 "worker_memory: must be a number from 0.1 to 0.5, got true",
                 id="memory-bool"),
    pytest.param(_post(CREATE, b'{"cluster_options": {"worker_cores": true}}'), 422,
                 "worker_cores: must be a number from 0.1 to 1, got true",
                 id="cores-bool"),  # true was 1.0, within these bounds: a cluster
    pytest.param(_post(ADAPT, b'{"minimum": "a"}'), 422,
                 'minimum: must be an integer from 0 to 100000 or null, got "a"',
                 id="adapt-minimum-string"),
    pytest.param(_get_options("Basic é".encode() + b"\xff"), 401, AUTHORIZATION,
                 id="basic-non-ascii"),
    pytest.param(_get_options(b"Basic " + base64.b64encode(b"\xff\xfe:pw")), 401,
                 "Authorization: Basic credentials must be the base64 of user:password "
                 "in UTF-8", id="basic-not-utf8"),
    pytest.param(_get_options(b"jupyterhub"), 401, AUTHORIZATION, id="bare-hub-options"),
    pytest.param(Call(DELETE, "/api/v1/clusters/{cluster}", BARE_HUB), 401, AUTHORIZATION,
                 id="bare-hub-delete"),
    pytest.param(_post(HEARTBEAT, b"{}", BARE_HUB), 401, AUTHORIZATION,
                 id="bare-hub-heartbeat"),
]
"""Every case of issue 14's "Why" for the gateway, with the answer it now gets."""


@dataclass
class Platform:
    pool: Pool
    cluster: str
    """A running cluster of USER, which every refused request must leave running."""
    token: str
    """That cluster's API token, as its scheduler (and code run there) has it."""

    def send(self, call: Call) -> Answer:
        values = {"cluster": self.cluster, "basic": basic(USER, PASSWORD).decode(),
                  "token": self.token}
        return send(self.pool.api_url, resolve(call, values))

    def clusters(self) -> dict[str, str]:
        """USER's clusters and their status."""
        answer = self.send(Call("GET /api/v1/clusters/", "/api/v1/clusters/", AS_USER))
        assert answer.status == 200, answer
        return {name: info["status"] for name, info in json.loads(answer.text).items()}

    snapshot = clusters

    def assert_unchanged(self, before: dict[str, str]) -> None:
        """No cluster created, the running one not stopped."""
        after = self.clusters()
        assert set(after) <= set(before), f"created {set(after) - set(before)}"
        assert after.get(self.cluster) == "RUNNING", after

    def accepted(self, call: Call, answer: Answer) -> None:
        """A cluster created by a valid generated call is stopped at once."""
        if call.route == CREATE:
            name = json.loads(answer.text)["name"]
            self.send(Call(DELETE, f"/api/v1/clusters/{name}", AS_USER))


def _scheduler_token(pool: Pool, cluster: str) -> str:
    """The API token of ``cluster``, read by code the user runs on its scheduler."""
    with Gateway(pool.api_url, proxy_address=pool.tcp_address,
                 auth=BasicAuth(USER, PASSWORD)) as gateway, \
            gateway.connect(cluster) as connected, connected.get_client() as client:
        return client.run_on_scheduler(lambda: os.environ["DASK_GATEWAY_API_TOKEN"])


@pytest.fixture(scope="module")
def platform(slapd: Slapd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    directory = tmp_path_factory.mktemp("hostile-gateway")
    # Users' uids run the cluster (uids from the directory): pytest makes its folders 0700.
    for folder in (directory, directory.parent, directory.parent.parent):
        folder.chmod(folder.stat().st_mode | stat.S_IXOTH)
    settings_ = small_settings().model_copy(update={
        "ldap_url": slapd.ldaps_url, "ldap_base_dn": slapd.base_dn,
        "ldap_bind_dn": slapd.bind_dn})
    pool = new_pool(directory, settings_)
    try:
        name = secrets.token_hex(3)  # agents name cgroups after their node ids
        pool.add_agent(f"hostile-sched-{name}", "scheduler", cores=2, memory_gb=2)
        pool.add_agent(f"hostile-work-{name}", "worker", cores=1, memory_gb=1)
        auth = directory / "ldap-auth.json"
        auth.write_text(json.dumps({"settings_source": str(pool.settings_path),
                                    "ldap_bind_password": slapd.bind_password,
                                    "ldap_ca_file": str(slapd.ca_file)}))
        pool.start_gateway(extra_args=["--authenticator-class", LDAP_AUTHENTICATOR,
                                       "--authenticator-config", str(auth)])
        created = send(pool.api_url, resolve(_post(CREATE, b"{}"),
                                             {"basic": basic(USER, PASSWORD).decode()}))
        assert created.status == 201, created
        cluster = json.loads(created.text)["name"]
        running = Platform(pool, cluster, "")
        wait_for(lambda: running.clusters().get(cluster) == "RUNNING", 60,
                 "the fixture's cluster did not start")
        running.token = _scheduler_token(pool, cluster)
        yield running
    finally:
        pool.close()


@pytest.mark.parametrize(("call", "status", "message"), WHY)
def test_each_case_found_by_hand_gets_a_clear_4xx_and_changes_nothing(
        platform: Platform, call: Call, status: int, message: str) -> None:
    assert_refused(platform, call, status, message)


def _heartbeat(count: int, active: list[str]) -> Call:
    return _post(HEARTBEAT, dump({
        "scheduler_address": "tls://127.0.0.1:1", "dashboard_address": "",
        "api_address": "http://127.0.0.1:1", "count": count, "active_workers": active,
        "closing_workers": [], "closed_workers": []}), (("Authorization", b"token {token}"),))


def test_a_heartbeat_that_leaves_out_a_running_worker_takes_it_as_closed(
        platform: Platform) -> None:
    """Found by the generated calls: dask-gateway asserts this never happens (HTTP 500),
    while code on a scheduler can send such a heartbeat with the cluster's token."""
    with Gateway(platform.pool.api_url, proxy_address=platform.pool.tcp_address,
                 auth=BasicAuth(USER, PASSWORD)) as gateway, \
            gateway.connect(platform.cluster) as cluster, cluster.get_client() as client:
        cluster.scale(1)
        client.wait_for_workers(1, timeout=60)
        worker = next(iter(client.scheduler_info()["workers"].values()))["name"]
        # As the scheduler reports it: the gateway now has the worker as running.
        assert platform.send(_heartbeat(1, [worker])).status == 200
        left_out = platform.send(_heartbeat(0, []))
        assert left_out.status == 200, left_out
        cluster.scale(0)
    assert platform.clusters()[platform.cluster] == "RUNNING"


# ---------------------------------------------------------------- generated input

_cluster_name = either(st.just("{cluster}"), path_parts)
_heartbeat_fields = {
    "scheduler_address": st.just("tls://127.0.0.1:1"), "dashboard_address": st.just(""),
    "api_address": st.just("http://127.0.0.1:1"), "count": st.integers(0, 3),
    "active_workers": st.lists(st.text(max_size=8), max_size=2),
    "closing_workers": st.lists(st.text(max_size=8), max_size=2),
    "closed_workers": st.lists(st.text(max_size=8), max_size=2),
}
_adapt_fields = {"minimum": st.none() | st.integers(0, 2),
                 "maximum": st.none() | st.integers(0, 2), "active": st.booleans()}
_options = objects({"worker_cores": st.floats(0.1, 1), "worker_memory": st.floats(0.1, 0.5)})


def _calls(route: str, paths: st.SearchStrategy[str],
           body: st.SearchStrategy[bytes | None] | None = None) -> st.SearchStrategy[Call]:
    """Valid credentials are among the headers drawn, so bodies also reach what is behind
    the login (``token`` for the heartbeat)."""
    return calls(route, paths, [b"{basic}", b"token {token}"], body)


def _under(name: st.SearchStrategy[str], suffix: str) -> st.SearchStrategy[str]:
    return name.map(lambda n: f"/api/v1/clusters/{n}{suffix}")


GATEWAY_CALLS = st.one_of(
    *[_calls(route, st.just(route.split(" ", 1)[1])) for route in ROUTES[:4]],
    _calls("GET /api/v1/clusters/", query_values(["running", "pending,running"]).map(
        lambda value: f"/api/v1/clusters/?status={value}")),
    _calls(CREATE, st.just("/api/v1/clusters/"), bodies({"cluster_options": _options})),
    _calls(CLUSTER, st.tuples(_cluster_name, query_values(["0", "1"])).map(
        lambda pair: f"/api/v1/clusters/{pair[0]}?wait={pair[1]}")),
    _calls(DELETE, _under(path_parts, "")),  # never the running cluster
    _calls(SCALE, _under(_cluster_name, "/scale"), bodies({"count": st.integers(0, 3)})),
    _calls(ADAPT, _under(_cluster_name, "/adapt"), bodies(_adapt_fields)),
    _calls(HEARTBEAT, _under(_cluster_name, "/heartbeat"), bodies(_heartbeat_fields)),
)


def test_generated_hostile_input_never_gets_a_5xx_and_the_platform_still_serves(
        platform: Platform) -> None:
    fuzz(platform, GATEWAY_CALLS, EXAMPLES, [case.values[0] for case in WHY], ROUTES)

    assert platform.send(Call("GET /api/health", "/api/health")).status == 200
    assert platform.clusters()[platform.cluster] == "RUNNING"
    # Room for the new cluster's worker: the fuzzing may have scaled the running one up.
    assert platform.send(_post(ADAPT, b'{"active": false}')).status == 200
    assert platform.send(_post(SCALE, b'{"count": 0}')).status == 200
    with Gateway(platform.pool.api_url, proxy_address=platform.pool.tcp_address,
                 auth=BasicAuth(USER, PASSWORD)) as gateway, \
            gateway.new_cluster() as cluster, cluster.get_client() as client:
        cluster.scale(1)
        client.wait_for_workers(1, timeout=60)
        assert client.submit(sum, [1, 2, 3]).result(timeout=30) == 6
