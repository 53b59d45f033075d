"""Users' JupyterLab servers on the worker pool: the gateway's side of the hub's spawner.

JupyterHub's ``PoolSpawner`` (identity/spawner.py) asks the gateway, with the server's own
hub token, to start the user's single-user server; the gateway places it on a worker node
like any other process (best fit, the group's notebook size, in the worker queue by group
priority when the pool is full) and the node agent runs it under the user's uid. One
server per user. The routes act on the caller's own server only:

- ``POST /api/v1/notebook`` ``{"env": {...}}``: start it (409 if one runs).
- ``GET /api/v1/notebook``: its status, URL once running, and its place in line.
- ``DELETE /api/v1/notebook``: stop it, and the clusters it started.

Clusters a notebook started are those created with the notebook's own hub token (the one
the spawner starts it with); they stop with it, so a dead or culled notebook leaves
nothing running. Clusters from scripts (a password or a personal token) are left alone.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from dask_gateway_server.routes import api_handler

from daskplatform.gateway.api_input import StartNotebook, checked_body

from daskplatform.shown import shown

NOTEBOOK_ENV = re.compile(r"(JUPYTERHUB|DASK_GATEWAY)_[A-Z0-9_]{1,100}")
"""What the spawner may set: JupyterHub's variables and the Dask Gateway client's config.
Anything else (PATH, LD_PRELOAD, ...) is the platform's to set."""
MAX_ENV_ENTRIES = 64
MAX_ENV_VALUE_CHARS = 4096
SINGLEUSER_ARGS = ["--ip={host}", "--port={port0}"]
"""``jupyterhub-singleuser`` on the node's address and a port of its notebook range."""
Status = Literal["waiting", "starting", "running", "stopped", "failed"]


def token_hash(request: web.Request) -> str | None:
    """Identifies the hub token a request carries (never the token itself)."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "jupyterhub" or not token:
        return None
    return hashlib.sha256(token.strip().encode()).hexdigest()[:32]


def checked_env(env: dict[str, Any]) -> dict[str, str]:
    """The ``env`` of a start request, or 422 naming what is wrong and what is allowed."""
    bad = [k for k, v in env.items() if not isinstance(k, str) or not NOTEBOOK_ENV.fullmatch(k)
           or not isinstance(v, str) or len(v) > MAX_ENV_VALUE_CHARS or "\0" in v]
    if bad or len(env) > MAX_ENV_ENTRIES:
        raise web.HTTPUnprocessableEntity(
            reason=f"env: at most {MAX_ENV_ENTRIES} variables named JUPYTERHUB_* or "
                   f"DASK_GATEWAY_*, each a string of at most {MAX_ENV_VALUE_CHARS} "
                   f"characters; refused: {shown(bad[:5])}")
    return dict(env)


@dataclass
class Notebook:
    """One user's server, from the start request until it has stopped."""

    process_id: str
    user: str
    group: str
    priority: int
    cores: float
    memory_gb: float
    run_as: dict[str, Any] | None
    env: dict[str, str]
    token_hash: str | None
    status: Status = "waiting"
    message: str = ""
    state: dict[str, Any] = field(default_factory=dict)
    """The placement checkpoint: node, agent URL, process id."""
    url: str = ""
    created: float = field(default_factory=time.time)

    @classmethod
    def adopted(cls, process: dict[str, Any], state: dict[str, Any], url: str) -> Notebook:
        """A running server found on a node (the gateway restarted): from its labels."""
        labels = process.get("labels", {})
        return cls(process_id=process["id"], user=labels["user"], group="", priority=1,
                   cores=process["cores"], memory_gb=process["memory_gb"], run_as=None,
                   env={}, token_hash=labels.get("notebook") or None,
                   status="running" if process["state"] == "running" else "starting",
                   state=state, url=url)

    @property
    def live(self) -> bool:
        return self.status in ("waiting", "starting", "running")

    def report(self, waiting: str | None) -> dict[str, Any]:
        return {"user": self.user, "status": self.status, "url": self.url or None,
                "message": self.message or waiting or "", "node": self.state.get("node_id"),
                "cores": self.cores, "memory_gb": self.memory_gb}


class NotebookRoutes:
    """The three routes; the backend does the placing (PoolBackend.*_notebook)."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend

    def routes(self) -> list[web.RouteDef]:
        path = "/api/v1/notebook"
        return [web.post(path, api_handler(self.start, user_authenticated=True)),
                web.get(path, api_handler(self.get, user_authenticated=True)),
                web.delete(path, api_handler(self.stop, user_authenticated=True))]

    async def start(self, request: web.Request) -> web.Response:
        body = await checked_body(request, StartNotebook)
        notebook = await self.backend.start_notebook(request["user"], checked_env(body.env),
                                                     token_hash(request))
        return web.json_response(self.backend.notebook_report(notebook), status=201)

    async def get(self, request: web.Request) -> web.Response:
        notebook = self.backend.notebooks.get(request["user"].name)
        if notebook is None:
            raise web.HTTPNotFound(reason=f"user {request['user'].name} has no notebook server")
        await self.backend.refresh_notebook(notebook)
        return web.json_response(self.backend.notebook_report(notebook))

    async def stop(self, request: web.Request) -> web.Response:
        await self.backend.stop_notebook(request["user"].name, "stopped by JupyterHub")
        return web.Response(status=204)
