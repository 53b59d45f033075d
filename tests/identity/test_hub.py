"""A real JupyterHub (with configurable-http-proxy) on 127.0.0.1 with the LDAP
authenticator: logins sync FreeIPA groups into hub groups, and a user's hub token
reaches the gateway with the quota of their group."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import dask.config
import pytest
from dask_gateway import Gateway, JupyterHubAuth

from daskplatform.gateway.server import GatewayProcess
from daskplatform.identity.hub import (
    GATEWAY_SERVICE,
    SERVICE_PREFIX,
    hub_config,
    write_hub_config,
)
from daskplatform.identity.ldap import BIND_PASSWORD_ENV
from daskplatform.identity.slapd import Slapd
from daskplatform.settings import RuntimeSettings
from tests.conftest import free_port
from tests.identity.conftest import AUTHENTICATOR, hub_login


@dataclass
class Hub:
    url: str
    api: str
    admin_token: str
    gateway_url: str
    gateway_proxy: str
    environment: dict[str, str]


def wait_http(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"jupyterhub exited with {process.returncode}:\n"
                               f"{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"jupyterhub not answering at {url}:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def hub(slapd: Slapd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """The gateway (``dask-platform gateway``, a child process) first, so the hub finds
    its registered service up, then the hub."""
    data = tmp_path_factory.mktemp("hub")
    settings_file = data / "settings.json"
    settings_file.write_text(RuntimeSettings(
        ldap_url=slapd.starttls_url, ldap_base_dn=slapd.base_dn,
        ldap_bind_dn=slapd.bind_dn).to_json())
    port, hub_port = free_port(), free_port()
    gateway_origin = f"http://127.0.0.1:{free_port()}"
    gateway_url = gateway_origin + SERVICE_PREFIX  # served under the hub's route
    gateway_proxy = f"gateway://127.0.0.1:{free_port()}"
    admin_token, gateway_token = secrets.token_hex(32), secrets.token_hex(32)
    env = {**os.environ, BIND_PASSWORD_ENV: slapd.bind_password}

    (data / "agent-token").write_text(secrets.token_hex(16))
    (data / "auth.json").write_text(json.dumps({
        "settings_source": str(settings_file), "ldap_ca_file": str(slapd.ca_file),
        "jupyterhub_api_url": f"http://127.0.0.1:{hub_port}/hub/api",
        "jupyterhub_service_name": GATEWAY_SERVICE}))
    gateway = GatewayProcess([
        "--settings", str(settings_file), "--address", f"127.0.0.1:{free_port()}",
        "--proxy-address", gateway_origin.removeprefix("http://"), "--prefix", SERVICE_PREFIX,
        "--proxy-tcp-address", gateway_proxy.removeprefix("gateway://"),
        "--agent-token-file", str(data / "agent-token"), "--db-url", "sqlite://",
        "--authenticator-class", AUTHENTICATOR, "--authenticator-config",
        str(data / "auth.json"), "--temp-dir", str(data / "gateway")],
        gateway_url, str(data / "gateway.log"), {**env, "JUPYTERHUB_API_TOKEN": gateway_token})

    config = hub_config(
        settings_source=str(settings_file), bind_url=f"http://127.0.0.1:{port}",
        hub_port=hub_port, proxy_api_port=free_port(), gateway_url=gateway_origin,
        gateway_proxy_address=gateway_proxy, gateway_api_token=gateway_token,
        data_dir=data, ldap_ca_file=str(slapd.ca_file), admin_token=admin_token)
    command = write_hub_config(config, data / "jupyterhub_config.json")
    log = data / "hub.log"
    gateway.start()
    try:
        with open(log, "wb") as out:
            process = subprocess.Popen(command, cwd=data, stdout=out,
                                       stderr=subprocess.STDOUT, env=env)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_http(f"{url}/hub/api", process, log)
            yield Hub(url, f"{url}/hub/api", admin_token, gateway_url, gateway_proxy,
                      dict(config.Spawner.environment))
        finally:
            process.terminate()  # the hub stops its proxy on the way out
            process.wait(30)
    finally:
        gateway.stop()


async def admin(hub: Hub, method: str, path: str, **kwargs: object) -> dict:
    headers = {"Authorization": f"token {hub.admin_token}"}
    async with aiohttp.ClientSession(headers=headers) as http, \
            http.request(method, f"{hub.api}{path}", **kwargs) as resp:  # type: ignore[arg-type]
        assert resp.status < 300, await resp.text()
        return await resp.json()


async def test_login_syncs_freeipa_groups_into_hub_groups(hub: Hub) -> None:
    status, _ = await hub_login(hub.url, "engineer1", "engineer1-demo")
    assert status == 302
    user = await admin(hub, "GET", "/users/engineer1")
    assert sorted(user["groups"]) == ["data_engineers", "ipausers"]
    assert user["admin"] is False
    group = await admin(hub, "GET", "/groups/data_engineers")
    assert group["users"] == ["engineer1"]

    status, _ = await hub_login(hub.url, "admin1", "admin1-demo")
    assert status == 302
    assert (await admin(hub, "GET", "/users/admin1"))["admin"] is True


async def test_hub_refuses_wrong_passwords_and_outsiders(hub: Hub) -> None:
    status, body = await hub_login(hub.url, "analyst1", "wrong")
    assert status != 302 and "Invalid username or password" in body
    status, body = await hub_login(hub.url, "outsider1", "outsider1-demo")
    assert status == 403
    assert "admins, data_analysts, data_engineers" in body


async def test_a_hub_token_reaches_the_gateway_with_the_group_quota(hub: Hub) -> None:
    for username, cores in (("engineer1", 4), ("analyst1", 2)):
        status, _ = await hub_login(hub.url, username, f"{username}-demo")
        assert status == 302
        token = (await admin(hub, "POST", f"/users/{username}/tokens",
                             json={"note": "test"}))["token"]
        async with Gateway(hub.gateway_url, proxy_address=hub.gateway_proxy,
                           auth=JupyterHubAuth(api_token=token), asynchronous=True) as client:
            options = await client.cluster_options()
        assert options._fields["worker_cores"].max == cores


async def test_gateway_with_no_arguments_in_a_notebook_environment(
        hub: Hub, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a single-user server gets: the spawner environment plus its hub token."""
    status, _ = await hub_login(hub.url, "analyst1", "analyst1-demo")
    assert status == 302
    token = (await admin(hub, "POST", "/users/analyst1/tokens", json={}))["token"]
    for name, value in {**hub.environment, "JUPYTERHUB_API_TOKEN": token}.items():
        monkeypatch.setenv(name, value)
    dask.config.refresh()
    try:
        async with Gateway(asynchronous=True) as client:
            options = await client.cluster_options()
        assert options._fields["worker_memory"].max == 4
    finally:
        monkeypatch.undo()
        dask.config.refresh()
