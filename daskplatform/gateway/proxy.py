"""``dask-platform gateway-proxy``: the gateway's proxy as a service of its own.

dask-gateway-server normally runs its Go proxy (``dask-gateway-proxy``: the scheduler
TLS proxy that every Dask client connects through, and the gateway's HTTP routes) as its
child, so restarting the gateway (a roll-out upgrades it last, in place) drops every
client's connection to its scheduler. Run apart, with the gateway configured
``Proxy.externally_managed`` (``dask-platform gateway --external-proxy``), the proxy
keeps its routes and its open connections while the gateway is away, and reads the
routing table again from the gateway that comes back (which re-adds the routes of the
clusters in its database).

Both sides share the proxy's API token through ``proxy-token`` in the gateway's state
directory (0600, made by whichever starts first); the proxy finds the gateway's private
API at a fixed ``--gateway-address``.

    dask-platform gateway-proxy --address HOST:PORT [--tcp-address HOST:PORT]
                                --gateway-address 127.0.0.1:PORT [--temp-dir DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import secrets
import sys
from pathlib import Path

from daskplatform.state_dir import default_state_dir

TOKEN_FILE = "proxy-token"
TOKEN_ENV = "DASK_GATEWAY_PROXY_TOKEN"
"""Where ``dask-gateway-proxy`` reads its token (never its command line)."""


def proxy_token(state_dir: Path) -> str:
    """The token in ``state_dir``, made once: written in full beside it, then linked into
    place, so a reader never sees a half-written file and two first starts agree."""
    path = state_dir / TOKEN_FILE
    if not path.exists():
        staged = state_dir / f".{TOKEN_FILE}.{os.getpid()}"
        fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
        try:
            os.link(staged, path)
        except FileExistsError:
            pass  # the other side made it first: use theirs
        finally:
            staged.unlink()
    return path.read_text(encoding="ascii").strip()


def proxy_executable() -> Path:
    """The Go binary dask-gateway-server ships (found without importing the server)."""
    spec = importlib.util.find_spec("dask_gateway_server")
    if spec is None or spec.origin is None:
        raise SystemExit("dask-platform gateway-proxy: dask-gateway-server is not installed "
                         "in this environment (the gateway host's `hub` extra)")
    return Path(spec.origin).parent / "proxy" / "dask-gateway-proxy"


def proxy_argv(address: str, tcp_address: str, gateway_address: str,
               log_level: str) -> list[str]:
    """``dask-gateway-proxy`` watching the gateway's routes; not a child process (it
    does not exit when its stdin closes)."""
    return [str(proxy_executable()), "-address", address, "-tcp-address", tcp_address,
            "-api-url", f"http://{gateway_address}/api/v1/routes", "-log-level", log_level]


def _address(text: str) -> str:
    host, _, port = text.rpartition(":")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: expected HOST:PORT")
    return text


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dask-platform gateway-proxy",
                                description="the gateway's proxy as a service of its own")
    p.add_argument("--address", required=True, type=_address,
                   help="HTTP routes (the gateway's API and dashboards); also the scheduler "
                        "TLS proxy without --tcp-address (0.0.0.0:8786 on the gateway host)")
    p.add_argument("--tcp-address", type=_address, default=None,
                   help="scheduler TLS proxy (default: --address, told apart by the first "
                        "bytes)")
    p.add_argument("--gateway-address", required=True, type=_address,
                   help="the gateway's private API, as its --address (a fixed port)")
    p.add_argument("--temp-dir", default=None,
                   help="the gateway's state directory, where the token is (default: "
                        "$STATE_DIRECTORY or ~/.local/state/dask-platform/gateway)")
    p.add_argument("--log-level", default="warn", choices=("error", "warn", "info", "debug"))
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.gateway_address.rpartition(":")[2] == "0":
        raise SystemExit("dask-platform gateway-proxy: --gateway-address needs the fixed "
                         "port the gateway listens on (its --address)")
    state = Path(args.temp_dir) if args.temp_dir else default_state_dir("gateway")
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    command = proxy_argv(args.address, args.tcp_address or args.address,
                         args.gateway_address, args.log_level)
    env = {**os.environ, TOKEN_ENV: proxy_token(state)}
    print(f"dask-platform gateway-proxy: {args.address} (scheduler TLS on "
          f"{args.tcp_address or args.address}), routes from {args.gateway_address}",
          flush=True)
    os.execve(command[0], command, env)
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main())
