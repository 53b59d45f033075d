"""JupyterHub side of identity: FreeIPA login with group sync, and the hub's config.

The stock LDAP authenticator does not sync groups; this one hands JupyterHub the
user's FreeIPA groups on every login and refresh (``manage_groups``), so hub tokens
resolved by the gateway carry the same groups an LDAP login would. The config builder
registers dask-gateway as a hub service and gives single-user servers the environment
in which ``Gateway()`` with no arguments reaches it with the user's hub token (the
daskhub pattern).
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jupyterhub.auth import Authenticator
from tornado import web
from traitlets import default
from traitlets.config import Config

from daskplatform.identity.configurable import DirectoryConfig
from daskplatform.identity.ldap import (
    DirectoryUnavailable,
    InvalidCredentials,
    LdapDirectory,
)
from daskplatform.settings import GATEWAY_SERVICE, SERVICE_PREFIX, QuotaSettings


class LdapHubAuthenticator(DirectoryConfig, Authenticator):
    """FreeIPA login for JupyterHub; LDAP groups become hub groups.

    Only members of a group that grants a platform group may log in; admins (the
    platform group) become hub admins.
    """

    @default("manage_groups")
    def _manage_groups(self) -> bool:
        return True

    @default("allow_all")
    def _allow_all(self) -> bool:
        return False

    _directory: LdapDirectory | None = None
    _quotas: QuotaSettings | None = None

    async def _load(self) -> tuple[LdapDirectory, QuotaSettings]:
        if self._directory is None or self._quotas is None:
            settings, self._directory = await self.load_directory()
            self._quotas = settings.quotas
        return self._directory, self._quotas

    def _model(self, username: str, groups: frozenset[str], quotas: QuotaSettings
               ) -> dict[str, Any]:
        return {"name": username, "groups": sorted(groups),
                "admin": quotas.group_for_ldap(groups) == "admins"}

    async def authenticate(self, handler: web.RequestHandler, data: dict[str, str]
                           ) -> dict[str, Any] | None:
        directory, quotas = await self._load()
        try:
            user = await asyncio.to_thread(directory.authenticate, data.get("username", ""),
                                           data.get("password", ""))
        except InvalidCredentials:
            return None
        except DirectoryUnavailable as exc:
            self.log.warning("LDAP unavailable: %s", exc)
            raise web.HTTPError(503, "the login directory (LDAP) is unreachable; "
                                     "try again shortly") from None
        return self._model(user.username, user.groups, quotas)

    def check_allowed(self, username: str, authentication: dict[str, Any] | None = None
                      ) -> bool:
        if authentication is None or self._quotas is None:
            return False
        if self._quotas.group_for_ldap(frozenset(authentication.get("groups", ()))) is None:
            raise web.HTTPError(
                403, f"user {username} is not in a group that grants access to the platform; "
                     f"ask to be added to one of: "
                     f"{', '.join(self._quotas.granting_ldap_groups())}")
        return True

    async def refresh_user(self, user: Any, handler: web.RequestHandler | None = None
                           ) -> dict[str, Any] | bool:
        """Re-read groups through the service account, so removals in FreeIPA reach the
        hub without a new login; keeps the current model while LDAP is away."""
        directory, quotas = await self._load()
        try:
            found = await asyncio.to_thread(directory.lookup, user.name)
        except DirectoryUnavailable:
            return True
        if found is None or quotas.group_for_ldap(found.groups) is None:
            return False
        return self._model(found.username, found.groups, quotas)


def gateway_client_env(gateway_url: str, proxy_address: str) -> dict[str, str]:
    """dask config for single-user servers: ``Gateway()`` with no arguments uses the
    gateway and the user's hub token (JUPYTERHUB_API_TOKEN, set by the spawner).
    Dashboard links are path-only, so they open at whatever origin the browser reached
    the hub through (the ALB on AWS)."""
    return {
        "DASK_GATEWAY__ADDRESS": gateway_url,
        "DASK_GATEWAY__PUBLIC_ADDRESS": SERVICE_PREFIX,
        "DASK_GATEWAY__PROXY_ADDRESS": proxy_address,
        "DASK_GATEWAY__AUTH__TYPE": "jupyterhub",
    }


SERVER_TOKEN_SCOPES = [
    "users:activity!user", "access:servers!server",  # JupyterHub's own "server" role
    f"access:services!service={GATEWAY_SERVICE}",  # Gateway() in the notebook
    "read:users:name!user", "read:users:groups!user",  # the gateway maps groups to quotas
]
"""The scopes of a notebook server's token: what the server needs, plus the gateway."""
CULLER_SCOPES = ["list:users", "read:users:activity", "read:servers", "delete:servers"]
NOTEBOOK_START_SECONDS = 900
"""How long the hub waits for a server, its time in line for a worker node included."""


def hub_config(*, settings_source: str, bind_url: str, hub_port: int, proxy_api_port: int,
               gateway_url: str, gateway_proxy_address: str, gateway_api_token: str,
               data_dir: Path, ldap_ca_file: str = "", admin_token: str = "",
               default_url: str = "", notebook_gateway_url: str = "",
               hub_bind_host: str = "127.0.0.1", hub_connect_host: str = "127.0.0.1",
               cull_idle_seconds: float = 0) -> Config:
    """JupyterHub config: LDAP login with group sync, dask-gateway as a service, and
    users' servers on the worker pool (PoolSpawner) culled when idle.

    ``gateway_url`` is the gateway's HTTP proxy as this host reaches it, serving under
    SERVICE_PREFIX; the hub's proxy routes SERVICE_PREFIX there. Notebook servers, on
    worker nodes, reach the gateway at ``notebook_gateway_url`` (default ``gateway_url``)
    and the hub's API at ``hub_connect_host`` (which ``hub_bind_host`` must serve).
    Everything the hub writes (database, cookie secret, proxy pid) goes to ``data_dir``.
    ``admin_token`` registers an admin service for automation (tests). ``default_url``
    is where users land after login (default: their notebook server).
    ``cull_idle_seconds`` > 0 runs jupyterhub-idle-culler with that timeout.
    """
    c = Config()
    c.JupyterHub.bind_url = bind_url
    c.JupyterHub.hub_bind_url = f"http://{hub_bind_host}:{hub_port}"
    c.JupyterHub.hub_connect_url = f"http://{hub_connect_host}:{hub_port}"
    c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{proxy_api_port}"
    c.ConfigurableHTTPProxy.pid_file = str(data_dir / "jupyterhub-proxy.pid")
    c.JupyterHub.db_url = f"sqlite:///{data_dir / 'jupyterhub.sqlite'}"
    c.JupyterHub.cookie_secret_file = str(data_dir / "jupyterhub_cookie_secret")
    if default_url:
        c.JupyterHub.default_url = default_url
    c.JupyterHub.authenticator_class = f"{__name__}.{LdapHubAuthenticator.__name__}"
    c.LdapHubAuthenticator.settings_source = settings_source
    c.LdapHubAuthenticator.ldap_ca_file = ldap_ca_file
    # Groups are read again before each server start: an offboarded user starts nothing.
    c.LdapHubAuthenticator.refresh_pre_spawn = True
    c.JupyterHub.spawner_class = "daskplatform.identity.spawner.PoolSpawner"
    c.PoolSpawner.gateway_url = gateway_url + SERVICE_PREFIX
    c.Spawner.server_token_scopes = SERVER_TOKEN_SCOPES
    c.Spawner.start_timeout = NOTEBOOK_START_SECONDS
    c.Spawner.http_timeout = 60
    c.Spawner.default_url = "/lab"
    services: list[dict[str, Any]] = [
        # OAuth (no consent page: it is the platform's own) logs hub users into
        # dashboards without a second password (gateway/dashboards.py).
        {"name": GATEWAY_SERVICE, "url": gateway_url, "api_token": gateway_api_token,
         "display": False, "oauth_no_confirm": True},
    ]
    roles: list[dict[str, Any]] = [
        # Users' tokens may reach the gateway (it checks this scope) and show their groups.
        {"name": "user", "scopes": ["self", f"access:services!service={GATEWAY_SERVICE}"]},
    ]
    if cull_idle_seconds > 0:
        services.append({"name": "idle-culler", "command": [
            sys.executable, "-m", "jupyterhub_idle_culler",
            f"--timeout={max(1, round(cull_idle_seconds))}",
            f"--cull-every={max(1, min(300, round(cull_idle_seconds / 2)))}"]})
        roles.append({"name": "idle-culler", "scopes": CULLER_SCOPES,
                      "services": ["idle-culler"]})
    if admin_token:
        services.append({"name": "platform-admin", "api_token": admin_token})
        roles.append({"name": "platform-admin", "scopes": ["admin:users", "admin:groups",
                                                             "admin:servers", "tokens"],
                      "services": ["platform-admin"]})
    c.JupyterHub.services = services
    c.JupyterHub.load_roles = roles
    environment = gateway_client_env(
        (notebook_gateway_url or gateway_url) + SERVICE_PREFIX, gateway_proxy_address)
    if cull_idle_seconds > 0:
        # Servers tell the hub they are busy well within the timeout (default every 5
        # minutes), so the culler never stops a server whose kernel is still working.
        environment["JUPYTERHUB_ACTIVITY_INTERVAL"] = str(
            max(1, min(300, round(cull_idle_seconds / 4))))
    c.Spawner.environment = environment
    return c


def hub_local_url(bind_url: str) -> str:
    """The hub's public URL as seen from its own host (all interfaces -> 127.0.0.1)."""
    parts = urlsplit(bind_url)
    host = parts.hostname or ""
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"{parts.scheme}://{host}:{parts.port}"


def write_hub_config(config: Config, path: Path) -> list[str]:
    """Write ``config`` as a JSON config file, readable by its owner only (it holds the
    service tokens; the LDAP bind password is never in it); returns the command that
    runs the hub with it."""
    path.touch(mode=0o600)
    path.write_text(json.dumps(config, indent=1))
    return [sys.executable, "-m", "jupyterhub", "-f", str(path)]
