"""Cluster dashboards behind the gateway's login: their owner and admins only.

dask-gateway routes ``/clusters/<name>/`` straight from its proxy to the scheduler's
dashboard, so anyone who can reach the proxy sees every cluster's dashboard (an old
upstream complaint). Here the proxy gets no dashboard routes; those paths fall through
to the gateway, which checks who asks (the gateway cookie, HTTP Basic with the user's
directory account, or a JupyterHub login through OAuth, the single sign-on hub users
expect) and only then forwards, WebSockets included. Anonymous callers get 401, other
users 403, each with a sentence that says what to do.
"""

from __future__ import annotations

import secrets
import time
from typing import Any
from urllib.parse import urlencode

import aiohttp
from aiohttp import web
from dask_gateway_server.models import User

from daskplatform.http_forward import end_to_end_headers, forward

OAUTH_CALLBACK = "/oauth_callback"
"""Under the gateway's prefix: where JupyterHub sends a browser back with a login code
(JupyterHub's default redirect for a service, ``/services/<name>/oauth_callback``)."""
STATE_COOKIE = "dask-gateway-oauth-state"
PENDING_LOGINS = 1000
"""Logins in flight kept at once (each for LOGIN_SECONDS); older ones are dropped."""
LOGIN_SECONDS = 600


class HubLogin:
    """JupyterHub's OAuth for the gateway service: a browser without gateway credentials
    is sent to the hub, which (the user being logged in) sends it back with a code; the
    code buys a hub token, which the authenticator resolves like a notebook's token."""

    def __init__(self, api_url: str, service_name: str, api_token: str, prefix: str) -> None:
        self.token_url = f"{api_url}/oauth2/token"
        self.authorize_path = "/hub/api/oauth2/authorize"
        self.client_id = f"service-{service_name}"
        self.client_secret = api_token
        self.redirect_uri = f"{prefix}{OAUTH_CALLBACK}"
        self._pending: dict[str, tuple[float, str]] = {}

    def start(self, next_url: str) -> web.HTTPFound:
        """Send the browser to the hub; the state ties its return to this browser."""
        now = time.monotonic()
        self._pending = {k: v for k, v in self._pending.items() if v[0] > now}
        while len(self._pending) >= PENDING_LOGINS:
            self._pending.pop(next(iter(self._pending)))
        state = secrets.token_urlsafe(24)
        self._pending[state] = (now + LOGIN_SECONDS, next_url)
        query = urlencode({"client_id": self.client_id, "redirect_uri": self.redirect_uri,
                           "response_type": "code", "state": state})
        found = web.HTTPFound(f"{self.authorize_path}?{query}")
        found.set_cookie(STATE_COOKIE, state, max_age=LOGIN_SECONDS, httponly=True,
                         samesite="Lax", path=self.redirect_uri)
        return found

    def finish(self, request: web.Request) -> str:
        """The page the login started from, once the callback's state is this browser's."""
        state = request.query.get("state", "")
        pending = self._pending.pop(state, None)
        if not state or state != request.cookies.get(STATE_COOKIE) or pending is None \
                or pending[0] < time.monotonic():
            raise web.HTTPBadRequest(reason="this login link is stale or was opened in another "
                                            "browser; open the dashboard link again")
        return pending[1]

    async def token(self, session: aiohttp.ClientSession, code: str) -> str:
        data = {"grant_type": "authorization_code", "code": code,
                "client_id": self.client_id, "client_secret": self.client_secret,
                "redirect_uri": self.redirect_uri}
        async with session.post(self.token_url, data=data) as response:
            if response.status != 200:
                raise web.HTTPUnauthorized(
                    reason=f"JupyterHub refused the login ({response.status}); open the "
                           "dashboard link again")
            return str((await response.json())["access_token"])


class Dashboards:
    """The ``/clusters/<name>/...`` and OAuth callback routes of the gateway app."""

    def __init__(self, backend: Any, prefix: str, hub: HubLogin | None) -> None:
        self.backend = backend
        self.prefix = prefix
        self.hub = hub
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        """Bodies pass through as the dashboard encoded them (no decompression)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(auto_decompress=False)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def routes(self) -> list[web.RouteDef]:
        routes = [web.route("*", "/clusters/{cluster_name}/{tail:.*}", self.dashboard)]
        if self.hub is not None:
            routes.append(web.get(OAUTH_CALLBACK, self.oauth_callback))
        return routes

    async def _user(self, request: web.Request) -> User:
        auth = request.app["authenticator"]
        cookie = request.cookies.get(auth.cookie_name)
        user = auth.cache.get(cookie) if cookie else None
        if user is not None:
            return user
        user = await auth.authenticate(request)
        return user[0] if isinstance(user, tuple) else user

    def _remember(self, request: web.Request, response: web.StreamResponse, user: User) -> None:
        auth = request.app["authenticator"]
        if request.cookies.get(auth.cookie_name) is None or \
                auth.cache.get(request.cookies[auth.cookie_name]) is None:
            response.set_cookie(auth.cookie_name, auth.cache.put(user),
                                max_age=auth.cache_max_age * 2, httponly=True,
                                samesite="Lax", path=f"{self.prefix}/")

    async def dashboard(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["cluster_name"]
        try:
            user = await self._user(request)
        except web.HTTPUnauthorized as exc:
            if self._browser(request) and self.hub is not None:
                raise self.hub.start(f"{self.prefix}{request.rel_url}") from None
            challenge = exc.headers.get("WWW-Authenticate", 'Basic realm="dask-gateway"')
            raise web.HTTPUnauthorized(
                headers={"WWW-Authenticate": challenge},
                text=f"the dashboard of cluster {name} needs a login: your directory "
                     "account (HTTP Basic), or open it from JupyterHub while logged in") \
                from None
        cluster = self.backend.db.get_cluster(name)
        if cluster is None or not cluster.dashboard_address:
            raise web.HTTPNotFound(text=f"no running cluster {name} has a dashboard; "
                                        "gateway.list_clusters() shows yours")
        if not user.has_permissions(cluster):
            raise web.HTTPForbidden(text=f"cluster {name} belongs to another user: a dashboard "
                                         "opens for its owner and for admins only")
        url = f"{cluster.dashboard_address}/{request.match_info['tail']}"
        if request.query_string:
            url += f"?{request.query_string}"
        headers = end_to_end_headers(request.headers, drop=frozenset({"authorization",
                                                                      "cookie"}))
        return await forward(request, self.session, url, headers,
                             before_send=lambda response: self._remember(request, response,
                                                                         user))

    @staticmethod
    def _browser(request: web.Request) -> bool:
        return "authorization" not in {k.lower() for k in request.headers} and \
            "text/html" in request.headers.get("Accept", "")

    async def oauth_callback(self, request: web.Request) -> web.Response:
        assert self.hub is not None
        next_url = self.hub.finish(request)
        token = await self.hub.token(self.session, request.query.get("code", ""))
        auth = request.app["authenticator"]
        user = await auth.authenticate(request.clone(
            headers={**request.headers, "Authorization": f"jupyterhub {token}"}))
        user = user[0] if isinstance(user, tuple) else user
        found = web.HTTPFound(next_url)
        found.del_cookie(STATE_COOKIE, path=self.hub.redirect_uri)
        self._remember(request, found, user)
        raise found
