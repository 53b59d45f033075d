"""Async client of the node agent API (docs/node-agent-api.md), used by the pool backend."""

from __future__ import annotations

import ssl as ssl_module
from typing import Any, Self

import aiohttp

from daskplatform.identifiers import safe_name


class NodeAgentError(Exception):
    """The agent answered with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class NodeUnreachable(Exception):
    """No answer from the agent (connection refused, timeout, TLS failure)."""


class NodeAgentClient:
    def __init__(self, base_url: str, token: str, timeout: float = 10,
                 ssl: ssl_module.SSLContext | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._ssl = ssl
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _request(self, method: str, path: str, *, json: Any = None,
                       params: dict[str, str] | None = None,
                       timeout: float | None = None) -> tuple[int, Any]:
        if self._session is None:
            self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout)
        # The session's timeout unless a call gives its own: aiohttp takes an explicit
        # timeout=None as "no timeout", and a hung agent must not hang the gateway.
        request_timeout = aiohttp.ClientTimeout(total=timeout) if timeout else self._timeout
        try:
            async with self._session.request(
                method, self.base_url + path, json=json, params=params,
                ssl=self._ssl if self._ssl is not None else True, timeout=request_timeout,
            ) as response:
                if response.content_type == "application/json":
                    body = await response.json()
                else:
                    body = await response.text()
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            raise NodeUnreachable(f"{self.base_url}: {exc!r}") from exc
        if response.status >= 400:
            message = body.get("error", str(body)) if isinstance(body, dict) else str(body)
            raise NodeAgentError(response.status, message)
        return response.status, body

    async def health(self) -> dict[str, Any]:
        return (await self._request("GET", "/v1/health"))[1]

    async def capacity(self) -> dict[str, Any]:
        return (await self._request("GET", "/v1/capacity"))[1]

    async def processes(self) -> list[dict[str, Any]]:
        return (await self._request("GET", "/v1/processes"))[1]["processes"]

    async def spawn(self, spec: dict[str, Any]) -> dict[str, Any]:
        """201 (new) and 200 (the same spec retried) both return the Process."""
        return (await self._request("POST", "/v1/processes", json=spec))[1]

    async def get(self, proc_id: str) -> dict[str, Any]:
        return (await self._request("GET", _process_path(proc_id)))[1]

    async def stop(self, proc_id: str, grace: float = 10) -> dict[str, Any]:
        """Waits for the stop: up to ``grace`` plus a margin for the forced kill."""
        return (await self._request("DELETE", _process_path(proc_id),
                                    params={"grace": str(grace)},
                                    timeout=(self._timeout.total or 0) + grace + 10))[1]

    async def upgrade(self, version: str) -> dict[str, Any]:
        """Ask the node to install ``version`` in place and restart its agent from it."""
        return (await self._request("POST", "/v1/upgrade", json={"version": version}))[1]

    async def log(self, proc_id: str, lines: int = 200) -> str:
        return (await self._request("GET", _process_path(proc_id) + "/log",
                                    params={"lines": str(lines)}))[1]


def _process_path(proc_id: str) -> str:
    """A process's URL; an id like ``..`` would name another resource."""
    return f"/v1/processes/{safe_name(proc_id, 'process id')}"
