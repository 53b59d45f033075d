"""A small real authenticator with groups from configuration: for tests and local runs
without LDAP. Production uses the LDAP/JupyterHub authenticators in
``daskplatform.identity``."""

from __future__ import annotations

import hmac

from aiohttp import BasicAuth, web
from dask_gateway_server.auth import SimpleAuthenticator
from dask_gateway_server.models import User
from traitlets import Dict, Integer, List, Unicode

from daskplatform.gateway.users import PlatformUser


class StaticGroupsAuthenticator(SimpleAuthenticator):
    """HTTP Basic auth; a user's groups come from the ``groups`` mapping."""

    groups = Dict(
        key_trait=Unicode(),
        value_trait=List(Unicode()),
        help="""Username -> list of groups (LDAP-style names such as data_analysts).

        Default: {} (every user is in no group, so the gateway refuses them).""",
        config=True,
    )

    uids = Dict(
        key_trait=Unicode(),
        value_trait=List(Integer(), minlen=2, maxlen=2),
        help="""Username -> [uid, gid] their processes run under.

        Default: {} (no POSIX identity; refused where the gateway runs processes as users).""",
        config=True,
    )

    admin_groups = List(Unicode(), help="""Groups whose members are admins: they list, see
        and stop every cluster. Default: [] (no admins); gateway_config sets the admins
        group's LDAP groups.""", config=True)

    async def authenticate(self, request: web.Request) -> User:
        header = request.headers.get("Authorization", "")
        try:
            credentials = BasicAuth.decode(header)
        except ValueError:
            raise web.HTTPUnauthorized(headers={"WWW-Authenticate": "Basic"},
                                       reason="Authentication required") from None
        # Constant-time, so the comparison leaks nothing about the password.
        if self.password and not hmac.compare_digest(credentials.password.encode(),
                                                     self.password.encode()):
            raise web.HTTPUnauthorized(headers={"WWW-Authenticate": "Basic"},
                                       reason="Authentication required")
        ids = self.uids.get(credentials.login) or [None, None]
        groups = self.groups.get(credentials.login, [])
        return PlatformUser(credentials.login, groups=groups,
                            admin=bool(set(groups) & set(self.admin_groups)),
                            uid=ids[0], gid=ids[1])
