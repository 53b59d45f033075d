"""Small probes the orchestrator runs inside a host's namespace (it cannot reach those
addresses from its own): wait for an HTTP(S) answer, try a TCP connection, or listen.

    python -m daskplatform.rehearsal.probe http URL [--ca FILE] [--timeout S]
    python -m daskplatform.rehearsal.probe connect HOST PORT [--timeout S]
    python -m daskplatform.rehearsal.probe listen PORT

``http`` exits 0 once URL answers 200 (following no redirect), else 1 at the timeout;
``connect`` prints ``open``, ``refused`` or ``timeout``; ``listen`` accepts and closes
connections on every address until SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import socket
import ssl
import sys
import time
import urllib.error
import urllib.request

CONNECT = ("open", "refused", "timeout")


def http_status(url: str, ca_file: str | None, timeout: float = 5) -> int | None:
    """The status ``url`` answers with (no redirects followed), None if nothing answers."""
    context = ssl.create_default_context(cafile=ca_file) if url.startswith("https") else None

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect, urllib.request.HTTPSHandler(
        context=context))
    try:
        with opener.open(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def connect(host: str, port: int, timeout: float) -> str:
    """``open`` if a TCP connection is accepted, ``refused`` if reset, else ``timeout``
    (a security group, like the rehearsal's nftables, drops without answering)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return "open"
    except ConnectionRefusedError:
        return "refused"
    except OSError:
        return "timeout"


def listen(port: int) -> None:
    server = socket.create_server(("0.0.0.0", port), reuse_port=False)
    server.settimeout(0.5)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    print(f"listening on {port}", flush=True)
    while not stopping:
        try:
            conn, _ = server.accept()
            conn.close()
        except TimeoutError:
            continue


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m daskplatform.rehearsal.probe")
    sub = p.add_subparsers(dest="probe", required=True)
    http = sub.add_parser("http")
    http.add_argument("url")
    http.add_argument("--ca")
    http.add_argument("--timeout", type=float, default=120)
    tcp = sub.add_parser("connect")
    tcp.add_argument("host")
    tcp.add_argument("port", type=int)
    tcp.add_argument("--timeout", type=float, default=3)
    server = sub.add_parser("listen")
    server.add_argument("port", type=int)
    args = p.parse_args(argv)
    if args.probe == "http":
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            if http_status(args.url, args.ca) == 200:
                return 0
            time.sleep(0.5)
        return 1
    if args.probe == "connect":
        print(connect(args.host, args.port, args.timeout), flush=True)
        return 0
    listen(args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
