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

from daskplatform.audit import AUDIT_LOG_ENV
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
ADMIN, ADMIN_PASSWORD = "admin1", "admin1-demo"
"""An admin of the demo directory: the admin routes' checks past their 403."""
OTHER_USERS = ("analyst1", "outsider1", ADMIN)
"""Directory users the admin routes may act on: none runs anything, so offboarding one
stops nothing (never USER, whose cluster must keep running)."""

CREATE = "POST /api/v1/clusters/"
CLUSTER = "GET /api/v1/clusters/{cluster_name}"
DELETE = "DELETE /api/v1/clusters/{cluster_name}"
SCALE = "POST /api/v1/clusters/{cluster_name}/scale"
ADAPT = "POST /api/v1/clusters/{cluster_name}/adapt"
HEARTBEAT = "POST /api/v1/clusters/{cluster_name}/heartbeat"
POOL_ROUTES = ("GET /api/v1/pool", "GET /api/v1/pool/workers", "GET /api/v1/status",
               "GET /api/v1/rollout")
START_ROLLOUT = "POST /api/v1/rollout"
START_NOTEBOOK = "POST /api/v1/notebook"
NOTEBOOK = "GET /api/v1/notebook"
STOP_NOTEBOOK = "DELETE /api/v1/notebook"
ADMIN_LISTS = ("GET /api/v1/admin/clusters", "GET /api/v1/admin/queue",
               "GET /api/v1/admin/nodes")
ADMIN_STOP = "DELETE /api/v1/admin/clusters/{cluster_name}"
DRAIN = "POST /api/v1/admin/nodes/{node_id}/drain"
UNDRAIN = "POST /api/v1/admin/nodes/{node_id}/undrain"
OFFBOARD = "POST /api/v1/admin/users/{username}/offboard"
REFRESH = "POST /api/v1/admin/users/{username}/refresh"
AUDIT = "POST /api/v1/admin/audit"
USAGE = "GET /api/v1/usage"
DASHBOARD = "GET /clusters/{cluster_name}/{tail}"
DASHBOARD_POST = "POST /clusters/{cluster_name}/{tail}"
ROUTES = ("GET /api/health", "GET /api/version", "GET /api/v1/options", *POOL_ROUTES,
          "GET /api/v1/clusters/", CREATE, CLUSTER, DELETE, SCALE, ADAPT, HEARTBEAT,
          START_ROLLOUT, START_NOTEBOOK, NOTEBOOK, STOP_NOTEBOOK, *ADMIN_LISTS, ADMIN_STOP,
          DRAIN, UNDRAIN, OFFBOARD, REFRESH, AUDIT, USAGE, DASHBOARD, DASHBOARD_POST)
"""dask-gateway-server's routes (routes.py) and every route the platform adds: the pool
backend's (backend.py), notebooks, admin and usage (admin.py) and dashboards (any method;
GET and POST here). Not here: ``/oauth_callback``, which exists only with a hub login."""

EXAMPLES = 3200
"""Generated calls over all routes (about 100 a route): some 65 s on 2 cores."""

AS_USER = (("Authorization", b"{basic}"), ("Content-Type", b"application/json"))
AS_ADMIN = (("Authorization", b"{admin}"), ("Content-Type", b"application/json"))


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

ADMIN_IN_NO_SUCH_CHARSET = (("Authorization", b"{admin}"),
                            ("Content-Type", b"application/json; charset=nope"))
CHARSET = 'Content-Type: charset must be utf-8, got "nope"'
VERSION = "version: must be 12 hex digits"
FOUND_ON_ADDED_ROUTES = [
    *[pytest.param(Call(route, path, ADMIN_IN_NO_SUCH_CHARSET, body), 400, CHARSET,
                   id=f"{route}-charset")
      for route, path, body in [
          ("POST /api/v1/rollout", "/api/v1/rollout", b"{}"),
          ("POST /api/v1/notebook", "/api/v1/notebook", b'{"env": {}}'),
          ("POST /api/v1/admin/audit", "/api/v1/admin/audit",
           b'{"event": "user.added", "user": "analyst1"}')]],
    pytest.param(Call("POST /api/v1/rollout", "/api/v1/rollout", AS_ADMIN,
                      b'{"version": "latest"}'), 422, f'{VERSION} (a runtimeVersion the '
                 "stack publishes), or null for the settings' runtimeVersion, got \"latest\"",
                 id="rollout-not-a-version"),
    pytest.param(Call("POST /api/v1/rollout", "/api/v1/rollout", AS_ADMIN,
                      b'{"version": "0123456789ab", "force": true}'), 422,
                 "force: unknown field; allowed: version", id="rollout-unknown-field"),
    pytest.param(Call("POST /api/v1/admin/audit", "/api/v1/admin/audit", AS_ADMIN,
                      b'{"event": "user.added", "user": "analyst1", "note": "\\udc80"}'), 422,
                 'note: must be text without NUL characters or lone surrogates, got "\\udc80"',
                 id="audit-lone-surrogate"),
    pytest.param(Call("POST /api/v1/admin/audit", "/api/v1/admin/audit", AS_ADMIN,
                      b'{"event": "user.added", "user": "analyst1", "cost": NaN}'), 422,
                 "cost: must be text, a finite number, true or false, got NaN",
                 id="audit-nan"),
]
"""Found on the routes added since issue 14. An unknown charset was a 500; a roll-out to
"latest" (or "") started, asked every node for a version none can install and left every
worker node drained for good, a roll-out never to end, which no later one could replace
(and a mistyped field was ignored: a roll-out to the published version); a lone surrogate
and NaN in audit fields went into the trail as they came (NaN is no JSON)."""


@dataclass(frozen=True)
class State:
    """What a refused request must leave as it was."""

    clusters: dict[str, str]
    """Every user's clusters and their status (as an admin lists them)."""
    draining: dict[str, bool]
    rollout: tuple[str, float] | None
    """The last roll-out's version and start."""


@dataclass
class Platform:
    pool: Pool
    cluster: str
    """A running cluster of USER, which every request must leave running."""
    token: str
    """That cluster's API token, as its scheduler (and code run there) has it."""
    nodes: tuple[str, str]
    """The scheduler node and the worker node."""
    version: str = ""
    """The runtime version every host runs: a roll-out to it has nothing to do."""

    def send(self, call: Call) -> Answer:
        values = {"cluster": self.cluster, "basic": basic(USER, PASSWORD).decode(),
                  "admin": basic(ADMIN, ADMIN_PASSWORD).decode(), "token": self.token,
                  "scheduler_node": self.nodes[0], "worker_node": self.nodes[1],
                  "version": self.version}
        return send(self.pool.api_url, resolve(call, values))

    def _get(self, path: str) -> Answer:
        return self.send(Call(f"GET {path}", path, AS_ADMIN))

    def clusters(self) -> dict[str, str]:
        """Every user's clusters and their status."""
        answer = self._get("/api/v1/clusters/")
        assert answer.status == 200, answer
        return {name: info["status"] for name, info in json.loads(answer.text).items()}

    def snapshot(self) -> State:
        pool = self._get("/api/v1/pool")
        assert pool.status == 200, pool
        rollout = self._get("/api/v1/rollout")
        assert rollout.status in (200, 404), rollout
        report = json.loads(rollout.text) if rollout.status == 200 else None
        return State(self.clusters(),
                     {n["node_id"]: n["draining"] for n in json.loads(pool.text)["nodes"]},
                     (report["version"], report["started_at"]) if report else None)

    def assert_unchanged(self, before: State) -> None:
        """No cluster created, the running one not stopped, no node drained, no
        roll-out started."""
        after = self.snapshot()
        assert set(after.clusters) <= set(before.clusters), \
            f"created {set(after.clusters) - set(before.clusters)}"
        assert after.clusters.get(self.cluster) == "RUNNING", after
        assert (after.draining, after.rollout) == (before.draining, before.rollout), after

    def accepted(self, call: Call, answer: Answer) -> None:
        """Undo what a valid generated call started (a cluster, a notebook server, a
        drained node; a roll-out to the running version ends at once), and check that it
        left USER's cluster running."""
        authorization = tuple(h for h in call.headers if h[0] == "Authorization")
        if call.route == CREATE:
            name = json.loads(answer.text)["name"]
            self.send(Call(DELETE, f"/api/v1/clusters/{name}", AS_ADMIN))
        elif call.route == START_NOTEBOOK:
            stopped = self.send(Call(STOP_NOTEBOOK, "/api/v1/notebook", authorization))
            assert stopped.status == 204, stopped
        elif call.route == DRAIN:
            node = json.loads(answer.text)["node"]
            undrained = self.send(Call(UNDRAIN, f"/api/v1/admin/nodes/{node}/undrain",
                                       AS_ADMIN))
            assert undrained.status == 200, undrained
        elif call.route == START_ROLLOUT:
            wait_for(lambda: json.loads(self._get("/api/v1/rollout").text)["done"], 30,
                     "a roll-out to the running version did not end")
        assert self.clusters().get(self.cluster) == "RUNNING", (call, answer)


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
    # The gateway writes an audit trail, as on a host: what it writes is checked too.
    pool = new_pool(directory, settings_, env={AUDIT_LOG_ENV: str(directory / "audit.jsonl")})
    try:
        name = secrets.token_hex(3)  # agents name cgroups after their node ids
        nodes = (f"hostile-sched-{name}", f"hostile-work-{name}")
        pool.add_agent(nodes[0], "scheduler", cores=2, memory_gb=2)
        pool.add_agent(nodes[1], "worker", cores=1, memory_gb=1)
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
        running = Platform(pool, cluster, "", nodes)
        wait_for(lambda: running.clusters().get(cluster) == "RUNNING", 60,
                 "the fixture's cluster did not start")
        running.token = _scheduler_token(pool, cluster)
        status = json.loads(running.send(Call("GET /api/v1/status", "/api/v1/status",
                                              AS_ADMIN)).text)
        running.version = status["runtime"]["gateway"]
        assert set(status["runtime"]["nodes"]) == {running.version}, status
        yield running
    finally:
        pool.close()


@pytest.mark.parametrize(("call", "status", "message"), WHY + FOUND_ON_ADDED_ROUTES)
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


def _either_user(route: str, paths: st.SearchStrategy[str],
                 body: st.SearchStrategy[bytes | None] | None = None
                 ) -> st.SearchStrategy[Call]:
    """USER's or an admin's credentials among the headers drawn: an admin route refuses
    the one with 403 and checks what the other sends past it."""
    return calls(route, paths, [b"{basic}", b"{admin}"], body)


def _path(route: str) -> st.SearchStrategy[str]:
    return st.just(route.split(" ", 1)[1])


_notebook_fields = {"env": st.dictionaries(
    st.from_regex(r"(JUPYTERHUB|DASK_GATEWAY)_[A-Z0-9_]{1,8}", fullmatch=True),
    st.text(max_size=8), max_size=2)}
_audit_fields = {"event": st.from_regex(r"user\.[a-z_]{1,12}", fullmatch=True),
                 "user": st.sampled_from(OTHER_USERS), "key": st.text(max_size=8)}
_node = either(st.sampled_from(["{scheduler_node}", "{worker_node}"]), path_parts)
_username = either(st.sampled_from(OTHER_USERS), path_parts)
_tail = st.one_of(
    st.sampled_from(["health", "individual-plots.json", "json/counts.json", "sitemap.json",
                     "", "..", "../..", "../../api/v1/pool", "%2e%2e/%2e%2e/api/v1/pool",
                     "..%2F..%2Fapi%2Fv1%2Fpool", "%2F%2Fexample.com/", "a%0d%0aX-Y:%20z"]),
    st.lists(path_parts, min_size=1, max_size=3).map("/".join),
)
"""Cheap dashboard pages (not the Bokeh ones, each a session on a scheduler confined
to a quarter core), dot segments and encoded slashes, CR LF, and any path."""
_dashboard = st.tuples(_cluster_name, _tail, query_values(["", "a=1"])).map(
    lambda parts: f"/clusters/{parts[0]}/{parts[1]}?{parts[2]}")

PLATFORM_CALLS = st.one_of(
    *[_either_user(route, _path(route)) for route in (*POOL_ROUTES, *ADMIN_LISTS)],
    _either_user(START_ROLLOUT, _path(START_ROLLOUT),
                 bodies({"version": st.just("{version}")})),
    _either_user(START_NOTEBOOK, _path(START_NOTEBOOK), bodies(_notebook_fields)),
    _either_user(NOTEBOOK, _path(NOTEBOOK)),
    _either_user(STOP_NOTEBOOK, _path(STOP_NOTEBOOK)),
    _either_user(ADMIN_STOP, path_parts.map(  # never the running cluster
        lambda name: f"/api/v1/admin/clusters/{name}")),
    _either_user(DRAIN, _node.map(lambda node: f"/api/v1/admin/nodes/{node}/drain")),
    _either_user(UNDRAIN, _node.map(lambda node: f"/api/v1/admin/nodes/{node}/undrain")),
    _either_user(OFFBOARD, _username.map(
        lambda name: f"/api/v1/admin/users/{name}/offboard")),
    _either_user(REFRESH, _username.map(
        lambda name: f"/api/v1/admin/users/{name}/refresh")),
    _either_user(AUDIT, _path(AUDIT), bodies(_audit_fields)),
    _either_user(USAGE, st.tuples(query_values(["7d", "24h", "2w"]),
                                  query_values(["user", "group", "cluster"])).map(
        lambda pair: f"/api/v1/usage?since={pair[0]}&by={pair[1]}")),
    _either_user(DASHBOARD, _dashboard),
    _either_user(DASHBOARD_POST, _dashboard),
)
"""The routes the platform adds to dask-gateway's."""

GATEWAY_CALLS = st.one_of(
    *[_calls(route, st.just(route.split(" ", 1)[1])) for route in ROUTES[:3]],
    _calls("GET /api/v1/clusters/", query_values(["running", "pending,running"]).map(
        lambda value: f"/api/v1/clusters/?status={value}")),
    _calls(CREATE, st.just("/api/v1/clusters/"), bodies({"cluster_options": _options})),
    _calls(CLUSTER, st.tuples(_cluster_name, query_values(["0", "1"])).map(
        lambda pair: f"/api/v1/clusters/{pair[0]}?wait={pair[1]}")),
    _calls(DELETE, _under(path_parts, "")),  # never the running cluster
    _calls(SCALE, _under(_cluster_name, "/scale"), bodies({"count": st.integers(0, 3)})),
    _calls(ADAPT, _under(_cluster_name, "/adapt"), bodies(_adapt_fields)),
    _calls(HEARTBEAT, _under(_cluster_name, "/heartbeat"), bodies(_heartbeat_fields)),
    PLATFORM_CALLS,
)


def test_generated_hostile_input_never_gets_a_5xx_and_the_platform_still_serves(
        platform: Platform) -> None:
    fuzz(platform, GATEWAY_CALLS, EXAMPLES,
         [case.values[0] for case in WHY + FOUND_ON_ADDED_ROUTES], ROUTES)

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
