"""A real slapd with the demo directory, and a real dask-gateway-server in-process with
the pool backend, the group quotas and the platform authenticator."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from daskplatform.gateway.server import gateway_config, running_gateway
from daskplatform.identity.slapd import Slapd
from daskplatform.settings import RuntimeSettings
from tests.conftest import free_port

AUTHENTICATOR = "daskplatform.identity.gateway_auth.PlatformAuthenticator"


@dataclass
class RunningGateway:
    address: str
    proxy_address: str


async def wait_routed(public_url: str, timeout: float = 15) -> None:
    """The gateway's proxy answers 404 until it has fetched its first routing table."""
    deadline = asyncio.get_running_loop().time() + timeout
    async with aiohttp.ClientSession() as http:
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"{public_url}/api/health") as resp:
                    if resp.status == 200:
                        return
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"gateway proxy at {public_url} not routing after {timeout}s")
            await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def platform_gateway(slapd: Slapd, workdir: Path) -> AsyncIterator[RunningGateway]:
    """The gateway with our authenticator; no nodes, since these tests look at identity
    and quotas, not at running clusters (tests/local starts clusters)."""
    settings = RuntimeSettings(ldap_url=slapd.ldaps_url, ldap_base_dn=slapd.base_dn,
                               ldap_bind_dn=slapd.bind_dn)
    settings_file = workdir / "settings.json"
    settings_file.write_text(settings.to_json())
    proxy, tcp = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    config = gateway_config(
        settings, address=f"127.0.0.1:{free_port()}", proxy_address=proxy,
        proxy_tcp_address=tcp, nodes=[], asg_name=None, agent_token="unused-no-nodes",
        db_url="sqlite://", authenticator_class=AUTHENTICATOR,
        authenticator_config={"settings_source": str(settings_file),
                              "ldap_bind_password": slapd.bind_password,
                              "ldap_ca_file": str(slapd.ca_file)},
        temp_dir=str(workdir))
    async with running_gateway(config):
        await wait_routed(f"http://{proxy}")
        yield RunningGateway(f"http://{proxy}", f"gateway://{tcp}")


@pytest.fixture
async def gateway(slapd: Slapd, tmp_path: Path) -> AsyncIterator[RunningGateway]:
    async with platform_gateway(slapd, tmp_path) as running:
        yield running


async def hub_login(hub_url: str, username: str, password: str,
                    http: aiohttp.ClientSession | None = None) -> tuple[int, str]:
    """JupyterHub's own login form, with its XSRF token: (status, body). With ``http``,
    that session keeps the login cookies (a browser, for later requests)."""
    if http is None:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as own:
            return await hub_login(hub_url, username, password, own)
    async with http.get(f"{hub_url}/hub/login") as resp:
        page = await resp.text()
    xsrf = re.search(r'name="_xsrf"\s+value="([^"]+)"', page)
    assert xsrf, f"no XSRF token in the login page:\n{page[:2000]}"
    async with http.post(f"{hub_url}/hub/login",
                         data={"username": username, "password": password,
                               "_xsrf": xsrf.group(1)}, allow_redirects=False) as resp:
        return resp.status, await resp.text()
