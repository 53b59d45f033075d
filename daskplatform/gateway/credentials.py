"""Short-lived AWS credentials for user code: the gateway assumes the caller's group's
data role (``dataAccess``, ``components/data_roles.py``) through STS and hands back
what a ``credential_process`` prints. User code never sees the instance role.

- ``GET /api/v1/credentials``: for the logged-in user (a notebook's hub token, or a
  password from a script), their platform group's role.
- ``GET /api/v1/clusters/{name}/credentials``: for code in a cluster's scheduler or
  workers, authenticated by the cluster's own token (``$DASK_GATEWAY_API_TOKEN``); the
  owner's group when the cluster was created.

Each session is named after the user (CloudTrail then names them on every data call)
and lasts ``dataAccess.sessionMinutes``; each vending goes to the audit trail. Users in
no platform group get 403 (the login already refuses them; kept here for any other
authenticator).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web
from botocore.exceptions import BotoCoreError, ClientError
from dask_gateway_server.backends.base import PublicException
from dask_gateway_server.backends.db_base import JobStatus
from dask_gateway_server.routes import api_handler

from daskplatform.audit import trail
from daskplatform.aws import aws_client
from daskplatform.data_access import PIPELINE_ROLE

log = logging.getLogger(__name__)

MIN_SESSION_NAME = 2
MAX_SESSION_NAME = 64
"""STS's bounds on RoleSessionName; user names already use only characters it allows."""


def session_name(user: str) -> str:
    return user.ljust(MIN_SESSION_NAME, "_")[:MAX_SESSION_NAME]


def credential_process_output(credentials: dict[str, Any]) -> dict[str, Any]:
    """STS's ``Credentials`` as the credential_process format (Version 1)."""
    return {"Version": 1, "AccessKeyId": credentials["AccessKeyId"],
            "SecretAccessKey": credentials["SecretAccessKey"],
            "SessionToken": credentials["SessionToken"],
            "Expiration": credentials["Expiration"].isoformat()}


class DataCredentials:
    """Assumes data roles; their ARNs follow from the role names and the gateway's own
    account and partition (the settings name roles before the account is known)."""

    def __init__(self, roles: dict[str, str], session_seconds: int,
                 pipeline_user: str = "") -> None:
        self.roles = roles
        self.session_seconds = session_seconds
        self.pipeline_user = pipeline_user
        self._arn_prefix: str | None = None

    def _role_arn(self, sts: Any, role: str) -> str:
        if self._arn_prefix is None:
            _, partition, _, _, account, _ = sts.get_caller_identity()["Arn"].split(":", 5)
            self._arn_prefix = f"arn:{partition}:iam::{account}:role/"
        return self._arn_prefix + role

    def _assume(self, user: str, role: str) -> dict[str, Any]:
        sts = aws_client("sts")
        answer = sts.assume_role(RoleArn=self._role_arn(sts, role),
                                 RoleSessionName=session_name(user),
                                 DurationSeconds=self.session_seconds)
        return answer["Credentials"]

    async def vend(self, user: str, group: str, via: str) -> dict[str, Any]:
        """The caller's group's role; the pipeline's own for its service account (the only
        way the pipeline's audit prefixes are written)."""
        if user == self.pipeline_user and PIPELINE_ROLE in self.roles:
            group = PIPELINE_ROLE
        role = self.roles.get(group)
        if role is None:
            raise web.HTTPServiceUnavailable(
                reason="this platform vends no data credentials: its settings name no data "
                       f"role for {group} (dataRoles, published by the stack); ask an admin")
        try:
            credentials = await asyncio.to_thread(self._assume, user, role)
        except (BotoCoreError, ClientError) as exc:
            log.warning("STS refused %s's data credentials (role %s): %s", user, role, exc)
            trail().record("data.credentials", user, group=group, role=role, via=via,
                           ok=False, reason=str(exc))
            raise web.HTTPServiceUnavailable(
                reason=f"the gateway could not get credentials for {group}'s data role "
                       "from AWS STS; try again shortly, and tell an admin if it persists "
                       "(the gateway's log says why)") from None
        output = credential_process_output(credentials)
        trail().record("data.credentials", user, group=group, role=role, via=via, ok=True,
                       expires=output["Expiration"])
        return output


class CredentialRoutes:
    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.vendor = DataCredentials(dict(backend.data_roles), backend.data_session_seconds,
                                      backend.pipeline_user)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/api/v1/credentials", api_handler(self.for_user, user_authenticated=True)),
            web.get("/api/v1/clusters/{cluster_name}/credentials",
                    api_handler(self.for_cluster, token_authenticated=True)),
        ]

    async def for_user(self, request: web.Request) -> web.Response:
        user = request["user"]
        try:
            _, config = await self.backend.process_cluster_options(user, {})
        except PublicException as exc:
            raise web.HTTPForbidden(reason=str(exc)) from None
        via = "jupyterhub" if request.headers.get("Authorization", "").lower().startswith(
            "jupyterhub ") else "password"
        return web.json_response(await self.vendor.vend(user.name, config.platform_group, via))

    async def for_cluster(self, request: web.Request) -> web.Response:
        name = request.match_info["cluster_name"]
        cluster = self.backend.db.get_cluster(name)
        if cluster is None or cluster.status >= JobStatus.STOPPED:
            raise web.HTTPNotFound(reason=f"cluster {name} is not running")
        return web.json_response(await self.vendor.vend(
            cluster.username, cluster.config.platform_group, f"cluster {name}"))
