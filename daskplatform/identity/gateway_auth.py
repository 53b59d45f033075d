"""dask-gateway authenticator: FreeIPA logins for scripts, JupyterHub tokens for notebooks.

``Authorization: Basic`` is checked against LDAP; ``Authorization: jupyterhub <token>``
is resolved by dask-gateway's own JupyterHubAuthenticator, whose answer carries the hub
groups that ``hub.py`` synced from LDAP. Both paths end in the same group check, so a
user gets the same quota from a notebook and from a script.
"""

from __future__ import annotations

import asyncio
import base64
import binascii

from aiohttp import web
from dask_gateway_server.auth import JupyterHubAuthenticator
from dask_gateway_server.models import User

from daskplatform.audit import trail
from daskplatform.gateway.quotas import NoPlatformGroup, group_of
from daskplatform.gateway.users import PlatformUser
from daskplatform.identity.configurable import DirectoryConfig
from daskplatform.identity.ldap import DirectoryUnavailable, InvalidCredentials, is_valid_username


def _claimed_user(request: web.Request) -> str:
    """The name a failed Basic login claimed, if it is a valid one (else a placeholder:
    the trail never holds what might be a password typed in the name field)."""
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "basic":
        try:
            name = base64.b64decode(credentials, validate=True).decode().partition(":")[0]
        except (binascii.Error, UnicodeDecodeError):
            return "(malformed)"
        return name if is_valid_username(name) else "(invalid name)"
    return "(hub token)" if scheme.lower() == "jupyterhub" else "(none)"


def unauthorized(message: str = "invalid username or password") -> web.HTTPException:
    return web.HTTPUnauthorized(reason=message,
                                headers={"WWW-Authenticate": 'Basic realm="dask-gateway"'})


class PlatformAuthenticator(DirectoryConfig, JupyterHubAuthenticator):
    """LDAP basic auth plus JupyterHub tokens, both mapped to platform groups.

    Hub tokens are accepted only when ``jupyterhub_api_url`` is configured (or
    ``JUPYTERHUB_API_URL`` is set, as JupyterHub does for its services).
    """

    def _hub_configured(self) -> bool:
        try:
            return bool(self.jupyterhub_api_url)
        except ValueError:  # the trait's default raises when JUPYTERHUB_API_URL is unset
            return False

    async def setup(self, app: web.Application) -> None:
        self.settings, self.directory = await self.load_directory()
        self.hub_enabled = self._hub_configured()
        if self.hub_enabled:
            await super().setup(app)

    async def _hub_user(self, request: web.Request) -> User:
        """dask-gateway's hub check, except that an unknown token is a 401: JupyterHub 6
        answers 403 for it, which the stock authenticator reports as a server error."""
        try:
            return await super().authenticate(request)
        except web.HTTPInternalServerError as exc:
            self.log.warning("JupyterHub refused a token (%s); answering 401", exc.reason)
            raise unauthorized("invalid or expired JupyterHub token") from None

    async def authenticate(self, request: web.Request) -> User:
        """A login by password or hub token; each one (not the cookie's reuse) goes to
        the audit trail, failures with their reason and never a password. A request with
        no credentials at all is the client's first round (it answers the 401's challenge),
        not a failed login."""
        scheme = request.headers.get("Authorization", "").partition(" ")[0].lower()
        if not scheme:
            return await self._authenticate(request)
        via = "jupyterhub" if scheme == "jupyterhub" else "password"
        try:
            user = await self._authenticate(request)
        except web.HTTPException as exc:
            trail().record("login", _claimed_user(request), via=via, ok=False,
                           reason=exc.reason)
            raise
        trail().record("login", user.name, via=via, ok=True)
        return user

    async def _authenticate(self, request: web.Request) -> User:
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "basic":
            user = await self._ldap_user(credentials)
        elif scheme.lower() == "jupyterhub" and self.hub_enabled:
            user = await self._hub_user(request)
        else:
            raise unauthorized("authentication required: HTTP Basic (LDAP account)"
                               + (" or a JupyterHub token" if self.hub_enabled else ""))
        try:
            group = group_of(user, self.settings.quotas)
        except NoPlatformGroup as exc:
            self.log.info("refused %s: in no platform group", user.name)
            raise web.HTTPForbidden(reason=str(exc)) from None
        uid, gid = (user.uid, user.gid) if isinstance(user, PlatformUser) else \
            await self._posix_ids(user.name)
        return PlatformUser(user.name, groups=list(user.groups), admin=group.name == "admins",
                            uid=uid, gid=gid)

    async def _posix_ids(self, username: str) -> tuple[int | None, int | None]:
        """A hub user's uid and gid, from the directory (hub tokens carry none)."""
        try:
            found = await asyncio.to_thread(self.directory.lookup_cached, username)
        except DirectoryUnavailable as exc:
            self.log.warning("LDAP unavailable: %s", exc)
            raise web.HTTPServiceUnavailable(
                reason="the login directory (LDAP) is unreachable; try again shortly") from None
        return (found.uid_number, found.gid_number) if found else (None, None)

    async def _ldap_user(self, credentials: str) -> User:
        try:
            decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise unauthorized("malformed Basic credentials") from None
        username, _, password = decoded.partition(":")
        try:
            found = await asyncio.to_thread(self.directory.authenticate, username, password)
        except InvalidCredentials:
            self.log.info("LDAP login failed for %r",
                          username if is_valid_username(username) else "(malformed name)")
            raise unauthorized() from None
        except DirectoryUnavailable as exc:
            self.log.warning("LDAP unavailable: %s", exc)
            raise web.HTTPServiceUnavailable(
                reason="the login directory (LDAP) is unreachable; try again shortly") from None
        return PlatformUser(found.username, groups=sorted(found.groups),
                            uid=found.uid_number, gid=found.gid_number)

    def forget(self, username: str) -> None:
        """The directory's cached answers for ``username`` (admin.py, on- and offboarding)."""
        self.directory.forget(username)

    async def cleanup(self) -> None:
        if getattr(self, "hub_enabled", False):
            await super().cleanup()
