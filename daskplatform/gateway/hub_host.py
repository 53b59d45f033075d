"""The gateway host in the daskhub pattern: ``dask-platform gateway --hub``.

JupyterHub (LDAP login, groups synced) listens on the public address and routes
``/services/dask-gateway/`` to the gateway. The gateway's own proxy serves its HTTP API
and the scheduler TLS proxy on one port (``--proxy-tcp-address``, 8786 on AWS; it tells
TLS from HTTP by the first bytes): Dask clients connect there, and schedulers on the
scheduler host send their heartbeats there, to the address ``--advertise-host`` names
(on AWS the host's private IP from instance metadata; never a loopback address another
host cannot reach). Notebooks use ``Gateway()`` with no arguments; scripts use LDAP
basic auth or a hub token.

A small supervisor runs both as child processes rather than JupyterHub managing the
gateway (``JupyterHub.services[].command``), because a hub-managed service gets only
an allowlist of the hub's environment plus the service's ``environment``, which
JupyterHub 5+ stores in its database: the gateway needs the host's AWS and
``STATE_DIRECTORY`` environment, and nothing of it belongs in a database. The
supervisor also starts the hub only once the gateway answers (so the hub's first
service check passes), and is the same code path in local mode. If either child
exits, it stops the other and exits 1, so systemd's ``Restart=always`` restarts
both; a persistent gateway database keeps clusters across that restart.

The gateway's hub API token is generated at every start and reaches the gateway in its
environment only, and the hub through its config file (mode 0600 in the state
directory). The LDAP bind password is read from Secrets Manager by each process itself.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from botocore.exceptions import BotoCoreError, ClientError

from daskplatform.gateway.children import Children, wait_http
from daskplatform.identity.hub import (
    GATEWAY_SERVICE,
    SERVICE_PREFIX,
    hub_config,
    hub_local_url,
    write_hub_config,
)
from daskplatform.node.imds import IMDS, MetadataUnavailable, instance_identity
from daskplatform.runtime_config import load_runtime_settings
from daskplatform.settings import RuntimeSettings, SettingsError
from daskplatform.state_dir import default_state_dir

STOP_TIMEOUT = {"jupyterhub": 30.0, "gateway": 60.0}
DEFAULT_TCP_ADDRESS = "127.0.0.1:8786"
"""The gateway's API and scheduler proxy without --proxy-tcp-address."""
"""Seconds each child gets to stop (the gateway stops in-memory clusters first)."""


def _say(message: str) -> None:
    print(f"dask-platform gateway: {message}", flush=True)


def _loopback(address: str) -> str:
    """``host:port`` to connect to from this host (all interfaces -> 127.0.0.1)."""
    return hub_local_url(f"http://{address}").removeprefix("http://")


class HubHost:
    """The gateway and JupyterHub as children of this process; ``close`` stops both."""

    def __init__(self, args: argparse.Namespace, gateway_argv: list[str],
                 state_dir: Path, advertise_host: str, idle_seconds: float) -> None:
        self.args = args
        self.idle_seconds = idle_seconds
        self.tcp_address = args.proxy_tcp_address or DEFAULT_TCP_ADDRESS
        self.advertise_host = advertise_host
        self.gateway_argv = gateway_argv
        self.state_dir = state_dir
        self.children = Children(None)
        self.public_url = hub_local_url(f"http://{args.proxy_address}")
        self.gateway_url = f"{self.public_url}{SERVICE_PREFIX}"
        """The gateway's API through the hub, as clients use it."""

    def start(self) -> None:
        token = secrets.token_hex(32)
        self._start_gateway(token)
        self._start_hub(token)

    def _start_gateway(self, token: str) -> None:
        tcp = self.tcp_address
        self.local_gateway = f"http://{_loopback(tcp)}"
        """The gateway's HTTP API from this host (the hub's route to it)."""
        self.scheduler_address = f"gateway://{self.advertise_host}:{tcp.rpartition(':')[2]}"
        child = gateway_child_argv(tcp, self.gateway_argv, self.advertise_host)
        api_url = child[child.index("--api-url") + 1]
        argv = [sys.executable, "-m", "daskplatform.cli", "gateway", *child]
        # What JupyterHub gives a service it runs; PlatformAuthenticator reads these.
        env = {**os.environ, "JUPYTERHUB_API_TOKEN": token,
               "JUPYTERHUB_API_URL": f"http://127.0.0.1:{self.args.hub_api_port}/hub/api",
               "JUPYTERHUB_SERVICE_NAME": GATEWAY_SERVICE}
        _say(f"starting the gateway (API and scheduler proxy on {tcp}; schedulers reach "
             f"it at {api_url})")
        process = self.children.start("gateway", argv, env)
        wait_http(f"{self.local_gateway}{SERVICE_PREFIX}/api/health",
                  lambda: process.poll() is None, "the gateway", None)

    def _start_hub(self, token: str) -> None:
        data = self.state_dir / "jupyterhub"
        data.mkdir(mode=0o700, parents=True, exist_ok=True)
        tcp_host, _, tcp_port = self.tcp_address.rpartition(":")
        # Notebook servers run on worker nodes: they reach the gateway and the hub's API
        # at this host's advertised address (the hub's API listens where the gateway does).
        config = hub_config(
            settings_source=self.args.settings, bind_url=f"http://{self.args.proxy_address}/",
            hub_port=self.args.hub_api_port, proxy_api_port=self.args.hub_proxy_api_port,
            gateway_url=self.local_gateway,
            gateway_proxy_address=self.scheduler_address, gateway_api_token=token,
            data_dir=data, notebook_gateway_url=f"http://{self.advertise_host}:{tcp_port}",
            hub_bind_host=tcp_host, hub_connect_host=self.advertise_host,
            cull_idle_seconds=self.idle_seconds)
        command = write_hub_config(config, data / "jupyterhub_config.json")
        env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTERHUB_")}
        _say(f"starting JupyterHub on {self.args.proxy_address}")
        process = self.children.start("jupyterhub", command, env, cwd=data)
        # Through the hub's proxy: proves the route to the gateway, not only the hub.
        wait_http(f"{self.gateway_url}/api/health", lambda: process.poll() is None,
                  "JupyterHub", None)

    def serve(self, stop: threading.Event) -> int:
        """Until ``stop`` is set (0) or a child exits (1)."""
        while not stop.wait(1):
            dead = self.children.dead()
            if dead:
                _say(f"{dead[0]} exited with {self.children.processes[dead[0]].returncode}; "
                     f"stopping")
                return 1
        return 0

    def close(self) -> None:
        """The hub first (no new requests), then the gateway."""
        for name in ("jupyterhub", "gateway"):
            if name in self.children.processes:
                self.children.stop(name, STOP_TIMEOUT[name])


def _check(args: argparse.Namespace) -> str | RuntimeSettings:
    """A clear refusal before anything starts, or the settings."""
    host, _, public_port = args.proxy_address.rpartition(":")
    if not host or not public_port.isdigit():
        return (f"--proxy-address {args.proxy_address!r}: expected HOST:PORT "
                "(0.0.0.0:8000 on the gateway host, 127.0.0.1:PORT locally)")
    tcp = args.proxy_tcp_address or DEFAULT_TCP_ADDRESS
    tcp_host, _, tcp_port = tcp.rpartition(":")
    if not tcp_host or not tcp_port.isdigit():
        return (f"--proxy-tcp-address {tcp!r}: expected HOST:PORT (0.0.0.0:8786 on the "
                "gateway host)")
    if tcp_host in ("0.0.0.0", "::", "") and not args.advertise_host:
        return (f"--proxy-tcp-address {tcp} listens on every interface: give "
                "--advertise-host (imds on EC2), the address schedulers on other hosts "
                "send their heartbeats to")
    ports = {"--proxy-tcp-address": int(tcp_port),
             "--hub-api-port": args.hub_api_port,
             "--hub-proxy-api-port": args.hub_proxy_api_port,
             "--proxy-address": int(public_port)}
    if len(set(ports.values())) != len(ports):
        return ("--hub needs four different ports: " +
                ", ".join(f"{name} {port}" for name, port in ports.items()))
    try:
        settings = load_runtime_settings(args.settings)
    except (SettingsError, ValueError, OSError, BotoCoreError, ClientError) as exc:
        return f"--settings {args.settings}: {exc}"
    if not settings.ldap_url:
        return (f"--hub: the settings in {args.settings} name no ldapUrl; JupyterHub logs "
                "users in against the directory (FreeIPA)")
    return settings


def gateway_child_argv(tcp_address: str, gateway_argv: list[str],
                       advertise_host: str) -> list[str]:
    """The gateway's own command line on the hub host: its API and scheduler proxy on
    ``tcp_address``, under the hub's service prefix, heartbeats to the advertised host."""
    port = tcp_address.rpartition(":")[2]
    return [*gateway_argv, "--proxy-address", tcp_address, "--prefix", SERVICE_PREFIX,
            "--api-url", f"http://{advertise_host}:{port}{SERVICE_PREFIX}/api"]


def advertise_address(args: argparse.Namespace) -> str:
    """Where other hosts reach this one: --advertise-host (``imds``: the instance's private
    IPv4), else the host --proxy-tcp-address listens on."""
    if args.advertise_host == IMDS:
        return instance_identity().private_ipv4
    if args.advertise_host:
        return args.advertise_host
    return (args.proxy_tcp_address or DEFAULT_TCP_ADDRESS).rpartition(":")[0]


def run_hub_host(args: argparse.Namespace, gateway_argv: list[str]) -> int:
    """``dask-platform gateway --hub ...``: run both until SIGTERM/SIGINT or a child dies."""
    settings = _check(args)
    if isinstance(settings, str):
        print(f"dask-platform gateway: {settings}", file=sys.stderr)
        return 2
    try:
        advertise = advertise_address(args)
    except MetadataUnavailable as exc:
        print(f"dask-platform gateway: --advertise-host {args.advertise_host}: {exc}",
              file=sys.stderr)
        return 2
    state_dir = Path(args.temp_dir) if args.temp_dir else default_state_dir("gateway")
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    host = HubHost(args, gateway_argv, state_dir, advertise,
                   settings.quotas.notebook_idle_minutes * 60)
    stop = threading.Event()

    def interrupt(signum: int, _: FrameType | None) -> None:
        raise KeyboardInterrupt  # while starting: unwind, then stop what started

    previous = {signum: signal.signal(signum, interrupt)
                for signum in (signal.SIGINT, signal.SIGTERM)}
    code = 0
    try:
        host.start()
        for signum in previous:
            signal.signal(signum, lambda *_: stop.set())
        _say(f"ready: {host.gateway_url} (JupyterHub at {host.public_url}, scheduler "
             f"proxy {host.scheduler_address})")
        code = host.serve(stop)
    except KeyboardInterrupt:
        code = 0
    except RuntimeError as exc:
        print(f"dask-platform gateway: {exc}", file=sys.stderr)
        code = 1
    finally:
        for signum in previous:  # stopping is not interruptible
            signal.signal(signum, signal.SIG_IGN)
        host.close()
        _say("stopped")
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return code
