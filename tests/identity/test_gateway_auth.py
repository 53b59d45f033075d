"""The platform authenticator inside a real dask-gateway-server, against a real slapd."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest
from dask_gateway import BasicAuth, Gateway

from daskplatform.identity.slapd import Slapd
from tests.identity.conftest import RunningGateway, platform_gateway

EXPECTED_BOUNDS = {"engineer1": (4, 8), "analyst1": (2, 4), "admin1": (16, 32)}
"""From the brief: data_engineers 4 cores / 8 GB, data_analysts 2 / 4, admins larger."""


async def get_options(http: aiohttp.ClientSession, gateway: RunningGateway,
                      auth: aiohttp.BasicAuth | None) -> tuple[int, str]:
    """(status, body) of the options request, which needs an authenticated user."""
    async with http.get(f"{gateway.address}/api/v1/options", auth=auth) as resp:
        return resp.status, await resp.text()


@pytest.mark.parametrize("username", sorted(EXPECTED_BOUNDS))
async def test_each_demo_user_gets_the_quota_of_their_group(
        gateway: RunningGateway, username: str) -> None:
    async with Gateway(gateway.address, proxy_address=gateway.proxy_address,
                       auth=BasicAuth(username, f"{username}-demo"),
                       asynchronous=True) as client:
        options = await client.cluster_options()
    cores, memory_gb = EXPECTED_BOUNDS[username]
    assert options._fields["worker_cores"].max == cores
    assert options._fields["worker_memory"].max == memory_gb


async def test_outsider_gets_403_naming_the_granting_groups(gateway: RunningGateway) -> None:
    async with aiohttp.ClientSession() as http:
        status, body = await get_options(
            http, gateway, aiohttp.BasicAuth("outsider1", "outsider1-demo"))
    assert status == 403
    message = json.loads(body)["error"]
    assert "outsider1" in message
    assert "admins, data_analysts, data_engineers" in message


@pytest.mark.parametrize("auth", [aiohttp.BasicAuth("engineer1", "wrong"),
                                  aiohttp.BasicAuth("nobody", "engineer1-demo"), None])
async def test_bad_or_missing_credentials_get_401(gateway: RunningGateway,
                                                  auth: aiohttp.BasicAuth | None) -> None:
    async with aiohttp.ClientSession() as http, \
            http.get(f"{gateway.address}/api/v1/options", auth=auth) as resp:
        assert resp.status == 401
        assert "Basic" in resp.headers["WWW-Authenticate"]


async def test_hub_tokens_are_refused_when_no_hub_is_configured(
        gateway: RunningGateway) -> None:
    async with aiohttp.ClientSession() as http, \
            http.get(f"{gateway.address}/api/v1/options",
                     headers={"Authorization": "jupyterhub abc"}) as resp:
        assert resp.status == 401


async def test_ldap_outage_gives_503_and_the_gateway_recovers(tmp_path: Path) -> None:
    """Own slapd, stopped and restarted on the same ports while the gateway runs."""
    with Slapd(tmp_path / "ldap") as ldap:
        async with platform_gateway(ldap, tmp_path) as gateway:
            # unsafe: keep cookies for an IP address, as dask_gateway's client does
            jar = aiohttp.CookieJar(unsafe=True)
            async with aiohttp.ClientSession(cookie_jar=jar) as engineer, \
                    aiohttp.ClientSession() as analyst:
                status, _ = await get_options(
                    engineer, gateway, aiohttp.BasicAuth("engineer1", "engineer1-demo"))
                assert status == 200  # engineer1 now holds a gateway session cookie

                ldap.stop()
                status, body = await get_options(
                    analyst, gateway, aiohttp.BasicAuth("analyst1", "analyst1-demo"))
                assert status == 503
                assert "LDAP" in json.loads(body)["error"]
                assert "unreachable" in json.loads(body)["error"]
                # The gateway keeps serving: health, and requests of signed-in users.
                async with engineer.get(f"{gateway.address}/api/health") as resp:
                    assert resp.status == 200
                status, _ = await get_options(engineer, gateway, None)
                assert status == 200

                ldap.start()
                status, _ = await get_options(
                    analyst, gateway, aiohttp.BasicAuth("analyst1", "analyst1-demo"))
                assert status == 200
