"""JupyterHub's spawner for the platform: each user's JupyterLab on the worker pool.

The hub does not start anything itself: it asks the gateway (gateway/notebooks.py) with
the server's own hub token, and the gateway places the server on a worker node through
the node agents, under the user's uid, like any Dask process. While the pool is full the
hub's progress page shows the user's place in line; a failed start shows the gateway's
reason. Stopping the server (the user, an admin, or the idle culler) stops the clusters
it started.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from jupyterhub.spawner import Spawner
from traitlets import Float, Unicode

from daskplatform.gateway.notebooks import NOTEBOOK_ENV


class NotebookServerError(RuntimeError):
    """The gateway refused or could not start or stop the server; the message says why."""


class PoolSpawner(Spawner):
    """Starts, polls and stops a user's server through the gateway's notebook API."""

    gateway_url = Unicode("", config=True, help="""The gateway's HTTP API as the hub reaches
        it, e.g. http://127.0.0.1:8786/services/dask-gateway. Default '' (hub_config sets
        it; the spawner refuses to start without it).""")
    status_interval = Float(1.0, config=True, help="""Seconds between status checks while
        a server starts (default 1).""")

    _message = "asking the gateway for room on a worker node"

    async def _call(self, method: str, body: Any = None) -> tuple[int, dict[str, Any]]:
        if not self.gateway_url:
            raise NotebookServerError("PoolSpawner.gateway_url is not set")
        headers = {"Authorization": f"jupyterhub {self.api_token}"}
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout) as http, http.request(
                method, f"{self.gateway_url}/api/v1/notebook", json=body,
                headers=headers) as response:
            text = await response.text()
            try:
                answer = json.loads(text) if text else {}
            except ValueError:
                answer = {"error": text[:500]}
            return response.status, answer

    async def start(self) -> str:
        env = {k: v for k, v in self.get_env().items() if NOTEBOOK_ENV.fullmatch(k)}
        status, answer = await self._call("POST", {"env": env})
        if status != 201:
            raise NotebookServerError(f"the gateway refused to start your server ({status}): "
                                      f"{answer.get('error') or answer}")
        while True:
            status, answer = await self._call("GET")
            state = answer.get("status")
            if state == "running":
                return str(answer["url"])
            if status != 200 or state in ("stopped", "failed"):
                raise NotebookServerError(answer.get("message") or answer.get("error")
                                          or f"the gateway answered {status}")
            self._message = answer.get("message") or f"your server is {state}"
            await asyncio.sleep(self.status_interval)

    async def progress(self) -> AsyncIterator[dict[str, Any]]:
        """What the hub's start page shows: the place in line, then the start."""
        shown = ""
        while True:
            if self._message != shown:
                shown = self._message
                yield {"progress": 50, "message": shown}
            await asyncio.sleep(self.status_interval)

    async def poll(self) -> int | None:
        """None while the server is waiting, starting or running; else an exit status."""
        try:
            status, answer = await self._call("GET")
        except aiohttp.ClientError as exc:
            self.log.warning("Could not ask the gateway about %s's server: %s",
                             self.user.name, exc)
            return None  # the gateway may be restarting; do not declare the server dead
        if status == 200 and answer.get("status") in ("waiting", "starting", "running"):
            return None
        return 1 if answer.get("status") == "failed" else 0

    async def stop(self, now: bool = False) -> None:
        status, answer = await self._call("DELETE")
        if status not in (204, 404):
            raise NotebookServerError(f"the gateway could not stop the server ({status}): "
                                      f"{answer.get('error') or answer}")
