"""Act as a user in their notebook, without a browser: start their server through the
hub's REST API, then run code in a kernel over Jupyter's REST and WebSocket API (the
protocol JupyterLab itself speaks). The rehearsal and the tests use it to prove what
user code can and cannot reach from a notebook on a worker node.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import aiohttp


class NotebookError(RuntimeError):
    """The server did not start, or the code raised; the message carries the reason."""


def _headers(token: str) -> dict[str, str]:
    return {"Authorization": f"token {token}"}


async def start_server(http: aiohttp.ClientSession, hub_url: str, user: str, token: str,
                       timeout: float = 300) -> dict[str, Any]:
    """Ask the hub for the user's server and wait until it is ready; the server model."""
    api = f"{hub_url}/hub/api/users/{user}"
    async with http.post(f"{api}/server", headers=_headers(token)) as response:
        if response.status not in (201, 202, 400):  # 400: already running
            raise NotebookError(f"the hub refused to start {user}'s server "
                                f"({response.status}): {await response.text()}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        async with http.get(api, headers=_headers(token)) as response:
            model = await response.json()
        server = (model.get("servers") or {}).get("")
        if server and server.get("ready"):
            return server
        if not server and not model.get("pending"):
            raise NotebookError(f"{user}'s server stopped while starting (the hub's model: "
                                f"{json.dumps(model)[:1000]}); the hub's log and the "
                                "gateway's notebook status say why")
        await asyncio.sleep(1)
    raise NotebookError(f"{user}'s server was not ready after {timeout:g} s")


async def stop_server(http: aiohttp.ClientSession, hub_url: str, user: str, token: str,
                      timeout: float = 120) -> None:
    api = f"{hub_url}/hub/api/users/{user}"
    async with http.delete(f"{api}/server", headers=_headers(token)) as response:
        if response.status not in (202, 204):
            raise NotebookError(f"the hub did not stop {user}'s server ({response.status})")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        async with http.get(api, headers=_headers(token)) as response:
            model = await response.json()
        if not model.get("servers") and not model.get("pending"):
            return
        await asyncio.sleep(1)
    raise NotebookError(f"{user}'s server had not stopped after {timeout:g} s")


async def run_code(http: aiohttp.ClientSession, server_url: str, token: str, code: str,
                   timeout: float = 300) -> str:
    """Run ``code`` in a new kernel of the server at ``server_url`` (…/user/NAME); what
    it printed. The kernel is shut down afterwards."""
    base = server_url.rstrip("/")
    async with http.post(f"{base}/api/kernels", headers=_headers(token), json={}) as response:
        if response.status != 201:
            raise NotebookError(f"no kernel ({response.status}): {await response.text()}")
        kernel = (await response.json())["id"]
    try:
        return await asyncio.wait_for(_execute(http, base, token, kernel, code), timeout)
    finally:
        async with http.delete(f"{base}/api/kernels/{kernel}", headers=_headers(token)):
            pass


async def _execute(http: aiohttp.ClientSession, base: str, token: str, kernel: str,
                   code: str) -> str:
    ws_url = base.replace("http", "ws", 1) + f"/api/kernels/{kernel}/channels"
    msg_id = uuid.uuid4().hex
    request = {"header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "",
                          "session": uuid.uuid4().hex, "version": "5.3",
                          "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
               "parent_header": {}, "metadata": {}, "channel": "shell",
               "content": {"code": code, "silent": False, "store_history": False,
                           "user_expressions": {}, "allow_stdin": False,
                           "stop_on_error": True}}
    printed: list[str] = []
    async with http.ws_connect(ws_url, headers=_headers(token)) as ws:
        await ws.send_str(json.dumps(request))
        async for message in ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            reply = json.loads(message.data)
            if reply.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = reply["msg_type"], reply["content"]
            if kind == "stream":
                printed.append(content["text"])
            elif kind == "error":
                raise NotebookError(f"{content['ename']}: {content['evalue']}\n"
                                    + "".join(printed))
            elif kind == "execute_reply":
                return "".join(printed)
    raise NotebookError("the kernel's channel closed before the code finished")


def session() -> aiohttp.ClientSession:
    """A client session for the calls above: the token only, no cookies (Jupyter asks
    cookie-carrying requests for an XSRF token, which scripts do not have)."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
