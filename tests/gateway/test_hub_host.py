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
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from dask_gateway import BasicAuth, Gateway, JupyterHubAuth

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
             monkeypatch: pytest.MonkeyPatch) -> Iterator[HubHost]:
    """What the stack publishes, the agents, then the host command; at teardown the
    host's whole process tree is gone even if the test failed half-way."""
    name = uuid.uuid4().hex[:8]
    secrets_manager = aws_client("secretsmanager")
    bind_secret = f"dask-platform-{name}/ldap-bind-password"
    secrets_manager.create_secret(Name=bind_secret, SecretString=slapd.bind_password)
    settings = small_settings().model_copy(update={
        "ldap_url": slapd.ldaps_url, "ldap_base_dn": slapd.base_dn,
        "ldap_bind_dn": slapd.bind_dn, "ldap_bind_password_secret_id": bind_secret,
        "agent_token_secret_id": f"dask-platform-{name}/agent-token"})
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
    assert sum("jupyterhub" in n for n in names) == 1
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
