"""Dashboards answer their cluster's owner and admins only; admins list and stop every
cluster. A real gateway and real schedulers; requests go through the gateway's proxy, as a
browser's would."""

from __future__ import annotations

import base64
import urllib.error
import urllib.request
from collections.abc import Iterator
from email.message import Message

import aiohttp
import pytest
from aiohttp import web

from daskplatform.http_forward import end_to_end_headers, forward
from tests.gateway.conftest import PASSWORD, Pool


@pytest.fixture
def pool(make_pool) -> Pool:
    pool = make_pool()
    pool.add_agent("sched-1", "scheduler", cores=2, memory_gb=2)
    pool.start_gateway()
    return pool


def _get(url: str, user: str | None = None, cookie: str | None = None,
         accept: str = "*/*") -> tuple[int, str, Message]:
    headers = {"Accept": accept}
    if user:
        headers["Authorization"] = "Basic " + base64.b64encode(
            f"{user}:{PASSWORD}".encode()).decode()
    if cookie:
        headers["Cookie"] = cookie
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode(), response.headers
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), exc.headers


@pytest.fixture
def running(pool: Pool) -> Iterator[str]:
    with pool.client("ann") as gateway, gateway.new_cluster() as cluster:
        yield cluster.name


def test_a_dashboard_opens_for_its_owner_and_admins_only(pool: Pool, running: str) -> None:
    url = f"{pool.api_url}/clusters/{running}/status"

    status, body, headers = _get(url)
    assert status == 401
    assert headers["WWW-Authenticate"].startswith("Basic")
    assert f"dashboard of cluster {running} needs a login" in body

    status, body, _ = _get(url, "bob")
    assert status == 403
    assert f"cluster {running} belongs to another user" in body

    for user in ("ann", "ada"):
        status, body, headers = _get(url, user)
        assert status == 200, (user, body)
        assert "Dask" in body
    status, health, _ = _get(f"{pool.api_url}/clusters/{running}/health", "ann")
    assert (status, health) == (200, "ok")

    # The login is remembered in an HttpOnly cookie, as the API's is.
    cookie = headers["Set-Cookie"].split(";")[0]
    assert "HttpOnly" in headers["Set-Cookie"]
    assert _get(url, cookie=cookie)[0] == 200

    status, body, _ = _get(f"{pool.api_url}/clusters/no-such-cluster/status", "ann")
    assert status == 404
    assert "list_clusters" in body


def test_the_proxy_has_no_route_around_the_gateway(pool: Pool, running: str) -> None:
    """dask-gateway's proxy routes /clusters/<name>/ to the dashboard for anyone: the
    scheduler's health page would answer "ok" to an anonymous caller."""
    status, body, _ = _get(f"{pool.api_url}/clusters/{running}/health")
    assert (status, body == "ok") == (401, False)


def test_admins_list_and_stop_every_cluster_and_others_list_their_own(pool: Pool,
                                                                        running: str) -> None:
    with pool.client("ada") as admin:
        assert running in [c.name for c in admin.list_clusters()]
        with pool.client("bob") as other:
            assert other.list_clusters() == []
        assert pool.api("GET", "/api/v1/clusters/?status=nonsense", "ada")[0] == 422
        admin.stop_cluster(running)
    with pool.client("ann") as owner:
        assert owner.list_clusters() == []


async def test_forward_streams_http_and_pumps_websockets() -> None:
    """The forwarding the dashboards (and the rehearsal's ALB) rely on, WebSockets
    included (Bokeh's plots arrive over one), against a real upstream."""
    async def echo(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            async for message in ws:
                await ws.send_str(f"echo {message.data}")
            return ws
        return web.Response(text=f"{request.method} {request.path_qs} "
                                 f"{request.headers.get('Authorization', 'none')}")

    upstream = web.Application()
    upstream.router.add_route("*", "/{tail:.*}", echo)
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        async def front(request: web.Request) -> web.StreamResponse:
            headers = end_to_end_headers(request.headers, drop=frozenset({"authorization"}))
            return await forward(request, session, f"{upstream_url}{request.path_qs}",
                                 headers, before_send=lambda r: r.set_cookie("seen", "1"))

        proxy = web.Application()
        proxy.router.add_route("*", "/{tail:.*}", front)
        runners = [web.AppRunner(upstream), web.AppRunner(proxy)]
        for runner in runners:
            await runner.setup()
        sites = [web.TCPSite(r, "127.0.0.1", 0) for r in runners]
        for site in sites:
            await site.start()
        upstream_url, proxy_url = (f"http://127.0.0.1:{s._server.sockets[0].getsockname()[1]}"
                                   for s in sites)
        try:
            async with aiohttp.ClientSession() as client:
                async with client.post(f"{proxy_url}/a/b?c=1",
                                       headers={"Authorization": "secret"}) as response:
                    assert await response.text() == "POST /a/b?c=1 none"
                    assert response.cookies["seen"].value == "1"
                async with client.ws_connect(f"{proxy_url}/ws") as ws:
                    await ws.send_str("hello")
                    assert (await ws.receive()).data == "echo hello"
        finally:
            for runner in runners:
                await runner.cleanup()
