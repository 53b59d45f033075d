"""A stand-in for the EC2 instance metadata service on 127.0.0.1 that speaks IMDSv2
as the hosts' launch template configures it (session tokens required): a GET without
the token from a PUT gets 401, as on EC2. It records the requests it saw."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from daskplatform.node.imds import ENDPOINT_ENV

TOKEN_PATH = "/latest/api/token"
METADATA_PREFIX = "/latest/meta-data/"


@dataclass
class ImdsStandIn:
    metadata: dict[str, str]
    endpoint: str = ""
    token: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    requests: list[tuple[str, str]] = field(default_factory=list)
    """(method, path) in order."""


def _handler(state: ImdsStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_: object) -> None:  # quiet test output
            pass

        def _reply(self, status: int, body: str = "") -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_PUT(self) -> None:
            state.requests.append(("PUT", self.path))
            ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds", "")
            if self.path != TOKEN_PATH:
                self._reply(404)
            elif not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
                self._reply(400, "missing or invalid token TTL")
            else:
                self._reply(200, state.token)

        def do_GET(self) -> None:
            state.requests.append(("GET", self.path))
            if self.headers.get("X-aws-ec2-metadata-token") != state.token:
                self._reply(401)
                return
            key = self.path.removeprefix(METADATA_PREFIX)
            if not self.path.startswith(METADATA_PREFIX) or key not in state.metadata:
                self._reply(404)
            else:
                self._reply(200, state.metadata[key])

    return Handler


@contextmanager
def imds_stand_in(monkeypatch: pytest.MonkeyPatch,
                  **metadata: str) -> Iterator[ImdsStandIn]:
    """Serve ``metadata`` (keys like ``instance_id`` for ``instance-id``) and point the
    runtime's IMDS client at it for the duration."""
    state = ImdsStandIn({k.replace("_", "-"): v for k, v in metadata.items()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with monkeypatch.context() as patch:
            patch.setenv(ENDPOINT_ENV, state.endpoint)
            yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
