"""Validation in front of the gateway's API: an aiohttp middleware that checks each
request before dask-gateway-server's own handlers (and the pool backend's) run.

Those handlers trust their input: a body that is not a JSON object, a string where a
count belongs, or an Authorization header without credentials ends in an exception and
HTTP 500. Here headers must decode, Authorization must be one of the schemes the
platform accepts, a cluster name must be a safe name, and each route's body must match
its model (docs/gateway.md, "Hostile input"). A refused request never reaches a handler,
so it creates, changes and deletes nothing.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

from aiohttp import web
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    model_validator,
)

from daskplatform.host.upgrade import VERSION_PATTERN, VERSION_RULE
from daskplatform.http_input import InputError, check_headers, json_object, plain_text, problems
from daskplatform.identifiers import SAFE_NAME, SAFE_NAME_RULE, UnsafeName, safe_name
from daskplatform.shown import shown

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

MAX_WORKERS = 100_000
"""Above any pool's size; larger counts are refused rather than capped."""
WORKERS_RULE = f"an integer from 0 to {MAX_WORKERS}"

Count = Annotated[int, Strict(), Field(ge=0, le=MAX_WORKERS)]

CHALLENGE = {"WWW-Authenticate": 'Basic realm="dask-gateway"'}
AUTHORIZATION_RULE = ("Authorization: must be 'Basic <base64 of user:password>', "
                      "'jupyterhub <token>' or 'token <cluster token>', in ASCII")
_SCHEMES = ("basic", "jupyterhub", "token")
_CREDENTIALS = re.compile(r"[A-Za-z0-9._~+/-]+=*")
"""RFC 7235 token68: what every accepted scheme carries."""


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class CreateCluster(_Body):
    cluster_options: dict[str, Any] | None = Field(
        None, description="an object of cluster options (GET /api/v1/options) or null")


class Scale(_Body):
    count: Count = Field(description=WORKERS_RULE)


class Adapt(_Body):
    minimum: Count | None = Field(None, description=f"{WORKERS_RULE} or null")
    maximum: Count | None = Field(None, description=f"{WORKERS_RULE} or null")
    active: Annotated[bool, Strict()] = Field(True, description="true or false")

    @model_validator(mode="after")
    def _ordered(self) -> Adapt:
        if self.minimum is not None and self.maximum is not None \
                and self.minimum > self.maximum:
            raise ValueError(f"minimum: must not exceed maximum ({self.maximum}), "
                             f"got {self.minimum}")
        return self


def _worker_name(value: object) -> str | int:
    if isinstance(value, bool) or not isinstance(value, str | int):
        # ValueError: pydantic reports it as a validation error (a TypeError escapes)
        raise ValueError(  # noqa: TRY004
            f"must be a worker name (a string or an integer), got {shown(value)}")
    return value


WorkerName = Annotated[object, AfterValidator(_worker_name)]
"""Dask worker names: the gateway's are strings; one a user adds may be a number."""
WORKER_NAMES = "a list of worker names"


class Heartbeat(_Body):
    """What dask-gateway's scheduler preload sends (and code on a scheduler could)."""

    scheduler_address: str = Field(description="a string")
    dashboard_address: str = Field(description="a string")
    api_address: str = Field(description="a string")
    count: Count = Field(description=WORKERS_RULE)
    active_workers: list[WorkerName] = Field(description=WORKER_NAMES)
    closing_workers: list[WorkerName] = Field(description=WORKER_NAMES)
    closed_workers: list[WorkerName] = Field(description=WORKER_NAMES)


class StartRollout(_Body):
    version: str | None = Field(None, pattern=VERSION_PATTERN.pattern, description=(
        f"{VERSION_RULE}, or null for the settings' runtimeVersion"))


class StartNotebook(_Body):
    """What the hub's spawner sends; notebooks.checked_env checks the variables."""

    env: dict[str, Any] = Field(description='an object {NAME: "value", ...}')


AUDIT_FIELD = re.compile(r"[a-z][a-z0-9_]{0,39}")


class AuditStep(_Body):
    """A step of ``dask-platform users`` for the trail: its event, the user, and more
    fields of plain values (text a trail line can hold, finite numbers, true/false)."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    event: str = Field(pattern=r"^user\.[a-z_]{1,40}$",
                       description="user.<step> (a-z and _ after the dot)")
    user: str = Field(pattern=f"^{SAFE_NAME.pattern}$",
                      description=f"a user name: {SAFE_NAME_RULE}")

    @model_validator(mode="after")
    def _plain_fields(self) -> AuditStep:
        for name, value in (self.model_extra or {}).items():
            if not AUDIT_FIELD.fullmatch(name):
                raise ValueError(f"{shown(name)}: a field name must be a-z, 0-9 and _, "
                                 "starting with a letter")
            if isinstance(value, str):
                try:
                    plain_text(value)
                except ValueError as exc:
                    raise ValueError(f"{name}: {exc}") from None
            elif not (isinstance(value, bool | int)
                      or isinstance(value, float) and math.isfinite(value)):
                raise ValueError(f"{name}: must be text, a finite number, true or false, "
                                 f"got {shown(value)}")
        return self


Body = TypeVar("Body", bound=_Body)


CLUSTER = "/api/v1/clusters/{cluster_name}"
BODIES: dict[tuple[str, str], type[_Body]] = {
    ("POST", "/api/v1/clusters/"): CreateCluster,
    ("POST", f"{CLUSTER}/scale"): Scale,
    ("POST", f"{CLUSTER}/adapt"): Adapt,
    ("POST", f"{CLUSTER}/heartbeat"): Heartbeat,
}
"""The routes that read a body (dask-gateway-server's routes.py)."""


async def checked_body(request: web.Request, model: type[Body],
                       empty: Body | None = None) -> Body:
    """The body of a route that checks who asks first (an admin's), as ``model``: 400
    for a body that is no JSON object, 422 naming each field that is wrong; ``empty``
    (if given) stands for no body at all."""
    if empty is not None and not (await request.read()).strip():
        return empty
    try:
        return model.model_validate(await json_object(request))
    except InputError as exc:
        raise web.HTTPBadRequest(reason=exc.message) from None
    except ValidationError as exc:
        raise web.HTTPUnprocessableEntity(reason=problems(exc, model)) from None


def check_authorization(value: str | None) -> None:
    """No header is left to the handlers (they answer 401); a header must be a scheme
    and credentials they can parse."""
    if value is None:
        return
    scheme, _, credentials = value.partition(" ")
    if scheme.lower() not in _SCHEMES or not _CREDENTIALS.fullmatch(credentials):
        raise InputError(401, AUTHORIZATION_RULE, CHALLENGE)
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            decoded = ""
        if ":" not in decoded:
            raise InputError(401, "Authorization: Basic credentials must be the base64 of "
                                  "user:password in UTF-8", CHALLENGE)


async def check_request(request: web.Request) -> None:
    """Raise InputError for the first thing wrong with ``request``."""
    check_authorization(request.headers.get("Authorization"))  # 401 even if not UTF-8
    check_headers(request)
    resource = request.match_info.route.resource
    if resource is None:  # no such route: aiohttp answers 404 or 405
        return
    if "cluster_name" in request.match_info:
        try:
            safe_name(request.match_info["cluster_name"], "cluster_name")
        except UnsafeName as exc:
            raise InputError(404, str(exc)) from None
    model = BODIES.get((request.method, resource.canonical))
    if model is not None:
        try:
            model.model_validate(await json_object(request))
        except ValidationError as exc:
            raise InputError(422, problems(exc, model)) from None


@web.middleware
async def validate_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse bad input before the handler; the handler reads the same cached body.

    The body is read first, whatever the answer: dask-gateway's proxy resets a client
    whose body was left unread, and the answer would be lost with it.
    """
    await request.read()  # at most the app's client_max_size, else HTTP 413
    try:
        await check_request(request)
    except InputError as exc:
        return exc.response()
    return await handler(request)
