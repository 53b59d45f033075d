"""The gateway host as on AWS, on 127.0.0.1: ``dask-platform gateway --hub`` with its
settings in an SSM parameter and the LDAP bind password and agent token in Secrets
Manager (moto server), a real slapd and real node agents. Users log in through
JupyterHub, reach the gateway through the hub's public port at /services/dask-gateway/
with a hub token or LDAP basic auth, compute, and SIGTERM leaves nothing running."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import stat
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import psutil
import pytest
from dask_gateway import BasicAuth, Gateway, JupyterHubAuth

from daskplatform import notebook_client
from daskplatform.aws import aws_client
from daskplatform.gateway import server
from daskplatform.gateway.server import GatewayProcess
from daskplatform.identity.ldap import CA_FILE_ENV
from daskplatform.identity.slapd import Slapd
from tests.conftest import free_port
from tests.gateway.conftest import FAST_CHECKS, Pool, small_settings, wait_for
from tests.identity.conftest import hub_login


@dataclass
class HubHost:
    process: GatewayProcess
    pool: Pool
    hub_url: str
    gateway_url: str
    """The gateway through the hub's public port."""
    scheduler_address: str
    ports: dict[str, int]
    state: Path
    log: Path
    bind_password: str


def _tree(pid: int) -> list[psutil.Process]:
    parent = psutil.Process(pid)
    return [parent, *parent.children(recursive=True)]


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def hub_host(aws_env: str, slapd: Slapd, make_pool: Callable[..., Pool],
             monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
             ) -> Iterator[HubHost]:
    """What the stack publishes, the agents, then the host command; at teardown the
    host's whole process tree is gone even if the test failed half-way. A test marked
    ``notebook_idle_minutes(N)`` gets that culling timeout."""
    name = uuid.uuid4().hex[:8]
    idle = request.node.get_closest_marker("notebook_idle_minutes")
    secrets_manager = aws_client("secretsmanager")
    bind_secret = f"dask-platform-{name}/ldap-bind-password"
    secrets_manager.create_secret(Name=bind_secret, SecretString=slapd.bind_password)
    settings = small_settings().model_copy(update={
        "ldap_url": slapd.ldaps_url, "ldap_base_dn": slapd.base_dn,
        "ldap_bind_dn": slapd.bind_dn, "ldap_bind_password_secret_id": bind_secret,
        "agent_token_secret_id": f"dask-platform-{name}/agent-token"})
    if idle is not None:
        settings = settings.model_copy(update={"quotas": settings.quotas.model_copy(
            update={"notebook_idle_minutes": idle.args[0]})})
    parameter = f"/dask-platform/{name}/runtime-settings"
    aws_client("ssm").put_parameter(Name=parameter, Type="String", Value=settings.to_json())
    monkeypatch.setenv(CA_FILE_ENV, str(slapd.ca_file))  # the FreeIPA CA on a real host

    pool = make_pool(settings)
    secrets_manager.create_secret(Name=settings.agent_token_secret_id, SecretString=pool.token)
    # Node ids unique to this run: agents name their cgroups after them, and other test
    # runs on this machine may use the usual ones at the same time.
    pool.add_agent(f"hub-sched-{name}", "scheduler", cores=1, memory_gb=1)
    pool.add_agent(f"hub-w-{name}", "worker", cores=1, memory_gb=1)
    ports = {name: free_port() for name in ("public", "tcp", "hub", "chp")}
    (pool.tmp / "overrides.py").write_text(FAST_CHECKS)
    state, log = pool.tmp / "state", pool.tmp / "host.log"
    argv = ["--hub", "--settings", f"ssm://{parameter}",
            "--proxy-address", f"127.0.0.1:{ports['public']}",
            "--proxy-tcp-address", f"127.0.0.1:{ports['tcp']}",
            "--hub-api-port", str(ports["hub"]),
            "--hub-proxy-api-port", str(ports["chp"]), "--temp-dir", str(state),
            "--config", str(pool.tmp / "overrides.py"),
            *[f"--node={a.node_id},{a.role},{a.url}" for a in pool.agents.values()]]
    hub_url = f"http://127.0.0.1:{ports['public']}"
    process = GatewayProcess(argv, f"{hub_url}/services/dask-gateway", str(log),
                             {**os.environ})
    pool.gateway = process  # its close() stops it too, after ours
    process.start(timeout=120)
    assert process.process is not None
    # Routed health answers as soon as both children serve; the host itself is serving
    # (and watching its children) only once it says so.
    wait_for(lambda: "dask-platform gateway: ready: " in log.read_text(errors="replace"),
             60, "the gateway host did not say it is ready")
    tree = _tree(process.process.pid)
    try:
        yield HubHost(process, pool, hub_url, f"{hub_url}/services/dask-gateway",
                      f"gateway://127.0.0.1:{ports['tcp']}", ports, state, log,
                      slapd.bind_password)
    finally:
        process.stop(timeout=100)
        for proc in tree:
            if proc.is_running():
                proc.kill()


def _hub_token(hub_url: str, username: str, password: str) -> str:
    """A token from the hub's REST API, the user proving who they are with their LDAP
    password (the hub knows a user only after a first login)."""
    status, _ = asyncio.run(hub_login(hub_url, username, password))
    assert status == 302
    request = urllib.request.Request(
        f"{hub_url}/hub/api/users/{username}/tokens", method="POST",
        data=json.dumps({"auth": {"username": username, "password": password},
                         "note": "script"}).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["token"]


def test_users_reach_the_gateway_through_the_hub_and_sigterm_stops_everything(
        hub_host: HubHost) -> None:
    host = hub_host
    token = _hub_token(host.hub_url, "engineer1", "engineer1-demo")
    with Gateway(host.gateway_url, proxy_address=host.scheduler_address,
                 auth=JupyterHubAuth(api_token=token)) as gateway, \
            gateway.new_cluster() as cluster:
        cluster.scale(1)
        with cluster.get_client(set_as_default=False) as client:
            client.wait_for_workers(1, timeout=90)
            assert client.submit(sum, range(101)).result() == 5050
        assert [c.name for c in gateway.list_clusters()] == [cluster.name]

    # Scripts: LDAP basic auth through the same public port, with the group's quota.
    with Gateway(host.gateway_url, proxy_address=host.scheduler_address,
                 auth=BasicAuth("admin1", "admin1-demo")) as gateway:
        assert gateway.cluster_options()._fields["worker_cores"].max == 2
    assert host.process.process is not None
    tree = _tree(host.process.process.pid)
    listening = {(c.laddr.ip, c.laddr.port) for p in tree
                 for c in p.net_connections("tcp") if c.status == psutil.CONN_LISTEN}
    assert {ip for ip, _ in listening} == {"127.0.0.1"}
    assert {host.ports[n] for n in ("public", "tcp", "hub", "chp")} <= {
        port for _, port in listening}
    names = [" ".join(p.cmdline()) for p in tree]
    (child,) = [p.cmdline() for p in tree
                if "daskplatform.cli" in p.cmdline() and "gateway" in p.cmdline()
                and "--hub" not in p.cmdline()]
    # Schedulers heartbeat to the gateway's API on its scheduler proxy port, at the
    # advertised address (the rehearsal proves it from another host).
    tcp = host.ports["tcp"]
    assert child[child.index("--api-url") + 1] == (
        f"http://127.0.0.1:{tcp}/services/dask-gateway/api")
    assert child[child.index("--proxy-address") + 1] == f"127.0.0.1:{tcp}"
    assert "--proxy-tcp-address" not in child
    assert sum("-m jupyterhub -f" in n for n in names) == 1
    assert sum("-m jupyterhub_idle_culler --timeout=3600" in n for n in names) == 1
    assert not [n for n in names if host.bind_password in n]

    hub_state = host.state / "jupyterhub"
    for private in ("jupyterhub_config.json", "jupyterhub_cookie_secret"):
        assert stat.S_IMODE((hub_state / private).stat().st_mode) & 0o077 == 0, private
    assert (hub_state / "jupyterhub.sqlite").exists()

    host.process.process.send_signal(signal.SIGTERM)
    assert host.process.process.wait(100) == 0
    assert not [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not [port for _, port in listening if _listening(port)]
    output = host.log.read_text(errors="replace")
    assert "dask-platform gateway: ready: " in output and "dask-platform gateway: stopped" in output
    assert host.bind_password not in output


def test_when_the_gateway_dies_the_hub_is_stopped_and_the_host_exits_1(
        hub_host: HubHost) -> None:
    """So systemd restarts both; half a gateway host must not keep serving logins."""
    assert hub_host.process.process is not None
    tree = _tree(hub_host.process.process.pid)
    (gateway,) = [p for p in tree if "daskplatform.cli gateway" in " ".join(p.cmdline())
                  and "--hub" not in p.cmdline()]
    gateway.kill()
    assert hub_host.process.process.wait(60) == 1
    assert not [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not _listening(hub_host.ports["public"])
    assert "dask-platform gateway: gateway exited" in hub_host.log.read_text()


def test_an_unknown_hub_token_is_refused_with_401(hub_host: HubHost) -> None:
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(urllib.request.Request(
            f"{hub_host.gateway_url}/api/v1/clusters/",
            headers={"Authorization": "jupyterhub not-a-token"}), timeout=30)
    assert refused.value.code == 401


@pytest.mark.parametrize("extra,settings_update,message", [
    (["--hub-api-port", "{gateway}"], {}, "--hub needs four different ports"),
    (["--proxy-address", "8000"], {}, "--proxy-address '8000': expected HOST:PORT"),
    (["--proxy-tcp-address", "0.0.0.0:8786"], {},
     "listens on every interface: give --advertise-host"),
    ([], {"ldap_url": ""}, "name no ldapUrl"),
])
def test_hub_mode_refuses_bad_input_before_starting_anything(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str],
        settings_update: dict, message: str) -> None:
    settings = tmp_path / "settings.json"
    settings.write_text(small_settings().model_copy(update={
        "ldap_url": "ldaps://127.0.0.1:1", "ldap_base_dn": "dc=example,dc=internal",
        **settings_update}).to_json())
    gateway_port = free_port()
    argv = ["--hub", "--settings", str(settings),
            "--proxy-tcp-address", f"127.0.0.1:{gateway_port}",
            "--temp-dir", str(tmp_path / "state"),
            *[a.format(gateway=gateway_port) for a in extra]]
    assert server.main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "state").exists()


async def _dashboard_as(host: HubHost, username: str, url: str) -> tuple[int, str, list[str]]:
    """A browser logged into the hub opens ``url``: (status, body, the redirects)."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        status, _ = await hub_login(host.hub_url, username, f"{username}-demo", browser)
        assert status == 302
        async with browser.get(url, headers={"Accept": "text/html"}) as response:
            return (response.status, await response.text(),
                    [str(r.url.path) for r in response.history])


def test_hub_users_open_their_dashboards_through_hub_login_and_no_one_elses(
        hub_host: HubHost) -> None:
    host = hub_host
    with Gateway(host.gateway_url, proxy_address=host.scheduler_address,
                 auth=BasicAuth("engineer1", "engineer1-demo")) as gateway, \
            gateway.new_cluster() as cluster:
        url = f"{host.hub_url}{cluster.dashboard_link.removeprefix(host.hub_url)}"
        status, body, hops = asyncio.run(_dashboard_as(host, "engineer1", url))
        assert status == 200 and "Dask" in body, (status, body[:300])
        assert "/hub/api/oauth2/authorize" in hops
        assert "/services/dask-gateway/oauth_callback" in hops
        status, body, _ = asyncio.run(_dashboard_as(host, "analyst1", url))
        assert status == 403 and "belongs to another user" in body
        # A script without credentials is not sent to a login page: a plain 401.
        with pytest.raises(urllib.error.HTTPError, match="401"):
            urllib.request.urlopen(url, timeout=30)


IN_THE_NOTEBOOK = """
import os
from dask_gateway import Gateway
gateway = Gateway()
cluster = gateway.new_cluster(shutdown_on_close=False)  # as a killed kernel leaves it
cluster.scale(1)
client = cluster.get_client()
client.wait_for_workers(1, timeout=90)
print(client.submit(sum, range(101)).result(), cluster.name, os.getuid(), os.getcwd())
"""
"""What a user types in a fresh notebook: no address, no credentials."""


async def _notebook_session(host: HubHost, token: str, other: str) -> tuple[str, str]:
    """engineer1's server: started through the hub, the cell run, then stopped by the hub;
    (what the cell printed, the node its server ran on)."""
    async with notebook_client.session() as http:
        await notebook_client.start_server(http, host.hub_url, "engineer1", token)
        printed = await notebook_client.run_code(
            http, f"{host.hub_url}/user/engineer1", token, IN_THE_NOTEBOOK)
        # Another user's token does not open engineer1's server.
        async with http.get(f"{host.hub_url}/user/engineer1/api/kernels",
                            headers={"Authorization": f"token {other}"},
                            allow_redirects=False) as response:
            assert response.status == 403, response.status
        nodes = [n for n in host.pool.agents if any(
            p["kind"] == "notebook" for p in host.pool.processes(n))]
        await notebook_client.stop_server(http, host.hub_url, "engineer1", token)
    return printed, ",".join(nodes)


def test_a_notebook_on_the_pool_reaches_the_gateway_with_no_arguments_and_its_clusters_stop_with_it(  # noqa: E501
        hub_host: HubHost) -> None:
    host = hub_host
    token = _hub_token(host.hub_url, "engineer1", "engineer1-demo")
    # A cluster from a script (password) is not the notebook's: it outlives it.
    with Gateway(host.gateway_url, proxy_address=host.scheduler_address,
                 auth=BasicAuth("engineer1", "engineer1-demo")) as gateway:
        scripted = gateway.new_cluster(shutdown_on_close=False).name
        other = _hub_token(host.hub_url, "analyst1", "analyst1-demo")
        printed, node = asyncio.run(_notebook_session(host, token, other))
        total, cluster, uid, cwd = printed.split()
        assert total == "5050" and cluster != scripted
        wait_for(lambda: [c.name for c in gateway.list_clusters()] == [scripted], 60,
                 "the notebook's cluster outlived the notebook, or the script's did not")
        assert node.startswith("hub-w-")  # a worker node, through its agent
        if os.geteuid() == 0:  # agents as root: the user's own uid, in their home
            assert (int(uid), Path(cwd).name) == (10001, "engineer1")
        gateway.stop_cluster(scripted)


async def _until_culled(host: HubHost, token: str) -> tuple[str, float]:
    async with notebook_client.session() as http:
        await notebook_client.start_server(http, host.hub_url, "engineer1", token)
        printed = await notebook_client.run_code(
            http, f"{host.hub_url}/user/engineer1", token, IN_THE_NOTEBOOK)
        idle_since = time.monotonic()
        for _ in range(90):
            async with http.get(f"{host.hub_url}/hub/api/users/engineer1",
                                headers={"Authorization": f"token {token}"}) as response:
                if not (await response.json()).get("servers"):
                    return printed, time.monotonic() - idle_since
            await asyncio.sleep(1)
    raise AssertionError("the idle server was not culled within 90 s")


@pytest.mark.notebook_idle_minutes(0.25)
def test_an_idle_notebook_is_culled_and_its_clusters_stop(hub_host: HubHost) -> None:
    host = hub_host
    token = _hub_token(host.hub_url, "engineer1", "engineer1-demo")
    printed, idle_for = asyncio.run(_until_culled(host, token))
    assert printed.split()[0] == "5050"
    assert idle_for >= 2  # culled for being idle, not at once
    with Gateway(host.gateway_url, proxy_address=host.scheduler_address,
                 auth=BasicAuth("engineer1", "engineer1-demo")) as gateway:
        wait_for(lambda: gateway.list_clusters() == [], 60,
                 "the culled notebook's cluster is still running")
    assert not [p for n in host.pool.agents for p in host.pool.processes(n)]
