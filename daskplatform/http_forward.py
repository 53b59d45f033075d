"""Forward one HTTP request, or a WebSocket, to an upstream URL (aiohttp on both sides).

Used where the platform stands between a browser and a service: the gateway in front of
cluster dashboards (it checks who asks first) and the rehearsal's load balancer. Bodies
stream both ways; hop-by-hop headers are not forwarded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import aiohttp
from aiohttp import web

HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                        "te", "trailers", "transfer-encoding", "upgrade", "host",
                        "content-length"})


def end_to_end_headers(headers: Mapping[str, str], drop: frozenset[str] = frozenset()
                       ) -> dict[str, str]:
    """``headers`` without hop-by-hop ones and without the lower-case names in ``drop``."""
    return {k: v for k, v in headers.items() if k.lower() not in HOP_BY_HOP | drop}


BeforeSend = Callable[[web.StreamResponse], None]
"""Called with the response to the client just before its headers go out (cookies)."""


async def forward(request: web.Request, session: aiohttp.ClientSession, url: str,
                  headers: dict[str, str], before_send: BeforeSend | None = None
                  ) -> web.StreamResponse:
    """Send ``request`` to ``url`` with ``headers`` and stream the answer back; a
    WebSocket upgrade becomes a WebSocket to ``url`` with messages pumped both ways."""
    if request.headers.get("Upgrade", "").lower() == "websocket":
        return await _websocket(request, session, url, headers, before_send)
    async with session.request(request.method, url, headers=headers,
                               data=request.content if request.can_read_body else None,
                               allow_redirects=False,
                               timeout=aiohttp.ClientTimeout(total=None)) as upstream:
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        for key, value in upstream.headers.items():
            if key.lower() not in HOP_BY_HOP:
                response.headers.add(key, value)
        if before_send is not None:
            before_send(response)
        await response.prepare(request)
        async for chunk in upstream.content.iter_any():
            await response.write(chunk)
        await response.write_eof()
        return response


async def _websocket(request: web.Request, session: aiohttp.ClientSession, url: str,
                     headers: dict[str, str], before_send: BeforeSend | None
                     ) -> web.WebSocketResponse:
    headers = {k: v for k, v in headers.items() if not k.lower().startswith("sec-websocket")}
    protocols = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")
                 if p.strip()]
    async with session.ws_connect(url, headers=headers, protocols=protocols) as upstream:
        client = web.WebSocketResponse(protocols=protocols)
        if before_send is not None:
            before_send(client)
        await client.prepare(request)

        async def pump(source: object, sink: object) -> None:
            async for message in source:  # type: ignore[attr-defined]
                if message.type == aiohttp.WSMsgType.TEXT:
                    await sink.send_str(message.data)  # type: ignore[attr-defined]
                elif message.type == aiohttp.WSMsgType.BINARY:
                    await sink.send_bytes(message.data)  # type: ignore[attr-defined]
                else:
                    break
            await sink.close()  # type: ignore[attr-defined]

        await asyncio.gather(pump(client, upstream), pump(upstream, client))
        return client
