"""The node agent's HTTP API (docs/node-agent-api.md) and its command line:

    dask-platform agent --role scheduler|worker --settings <source> [--host 127.0.0.1]
        [--advertise-host ADDRESS|imds] [--port N] [--token-file F] [--cores N]
        [--memory-gb N] [--tls-cert F --tls-key F] [--workdir D] [--node-id ID] [--cold]

On an EC2 host: ``--host 0.0.0.0 --advertise-host imds`` (the private IPv4 and the
instance id, which is how the gateway names the node, come from instance metadata),
and the token comes from the secret the settings name (``agentTokenSecretId``).
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import logging
import os
import signal
import socket
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import psutil
from aiohttp import web
from pydantic import ValidationError

from daskplatform.agent_token import MIN_TOKEN_CHARS, AgentTokenError, wait_for_agent_token
from daskplatform.host.upgrade import UpgradeRequest, upgrade_in_background
from daskplatform.http_input import InputError, check_headers, json_object, problems
from daskplatform.identifiers import SAFE_NAME_RULE, UnsafeName, safe_name
from daskplatform.node import confine
from daskplatform.node.imds import IMDS, MetadataUnavailable, instance_identity
from daskplatform.node.ports import PortsExhausted
from daskplatform.node.spec import MIN_USER_UID, Spawn, SpawnError
from daskplatform.node.supervisor import Conflict, NoCapacity, NodeShape, NotFound, Supervisor
from daskplatform.runtime_config import load_runtime_settings
from daskplatform.settings import INSTANCE_SHAPES, RuntimeSettings
from daskplatform.state_dir import default_state_dir

log = logging.getLogger(__name__)

TOKEN_ENV = "DASK_PLATFORM_AGENT_TOKEN"
SUPERVISOR = web.AppKey("supervisor", Supervisor)
MAX_LOG_LINES = 10_000
MAX_LOG_BYTES = 4 << 20
"""A tail reads at most this much of the end of a log."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def make_app(supervisor: Supervisor, token: str, stop_grace: float,
             restart: Callable[[], None] = lambda: None) -> web.Application:
    """``restart`` ends the agent after an in-place upgrade installed a new version (its
    service manager starts it again from it; the Dask processes keep running)."""
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def auth_and_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path != "/v1/health":
            # aiohttp keeps bytes that are not UTF-8 as surrogates; back to bytes, they
            # simply do not match
            given = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
            if not hmac.compare_digest(given, expected):
                return _error(401, "missing or wrong bearer token")
        try:
            check_headers(request)
            return await handler(request)
        except InputError as exc:
            return exc.response()
        except SpawnError as exc:
            return _error(400, str(exc))
        except NotFound as exc:
            return _error(404, str(exc))
        except Conflict as exc:
            return _error(409, str(exc))
        except (NoCapacity, PortsExhausted) as exc:
            return _error(507, str(exc))

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def capacity(_: web.Request) -> web.Response:
        return web.json_response(supervisor.capacity())

    async def list_processes(_: web.Request) -> web.Response:
        return web.json_response({"processes": [r.public() for r in supervisor.processes()]})

    async def spawn(request: web.Request) -> web.Response:
        record, created = await supervisor.spawn(Spawn.parse(await json_object(request)))
        return web.json_response(record.public(), status=201 if created else 200)

    async def get_process(request: web.Request) -> web.Response:
        return web.json_response(supervisor.get(request.match_info["id"]).public())

    async def stop_process(request: web.Request) -> web.Response:
        grace = _query_number(request, "grace", stop_grace, 0, 3600)
        record = await supervisor.stop(request.match_info["id"], grace)
        return web.json_response(record.public())

    async def upgrade(request: web.Request) -> web.Response:
        try:
            version = UpgradeRequest.model_validate(await json_object(request)).version
        except ValidationError as exc:
            raise InputError(400, problems(exc, UpgradeRequest)) from None
        current = supervisor.upgrade
        if version == supervisor.runtime_version:
            return web.json_response({"version": version, "state": "current"})
        if not (current and current["version"] == version
                and current["state"] == "installing"):
            supervisor.upgrade = {"version": version, "state": "installing", "message": ""}
            asyncio.ensure_future(_upgrade(supervisor, version, restart))
        return web.json_response(supervisor.upgrade, status=202)

    async def tail_log(request: web.Request) -> web.Response:
        lines = int(_query_number(request, "lines", 200, 1, MAX_LOG_LINES))
        path = supervisor.log_path(request.match_info["id"])
        return web.Response(text=_tail(path, lines), content_type="text/plain")

    app = web.Application(middlewares=[auth_and_errors], client_max_size=8 << 20)
    app[SUPERVISOR] = supervisor
    app.router.add_get("/v1/health", health)
    app.router.add_get("/v1/capacity", capacity)
    app.router.add_get("/v1/processes", list_processes)
    app.router.add_post("/v1/processes", spawn)
    app.router.add_get("/v1/processes/{id}", get_process)
    app.router.add_delete("/v1/processes/{id}", stop_process)
    app.router.add_get("/v1/processes/{id}/log", tail_log)
    app.router.add_post("/v1/upgrade", upgrade)
    return app


async def _upgrade(supervisor: Supervisor, version: str, restart: Callable[[], None]) -> None:
    """Install ``version`` beside this one; on success end the agent (to be started
    again from it), on failure say why in the capacity report and keep serving."""
    log.info("upgrading this node to runtime %s (processes keep running)", version)
    ok, said = await upgrade_in_background(version)
    supervisor.upgrade = {"version": version, "state": "installed" if ok else "failed",
                          "message": said}
    if ok:
        log.info("runtime %s installed; restarting the agent from it", version)
        restart()
    else:
        log.warning("upgrade to runtime %s failed, still on %s: %s", version,
                    supervisor.runtime_version, said)


def _query_number(request: web.Request, name: str, default: float, low: float,
                  high: float) -> float:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not low <= value <= high:
        raise SpawnError(f"{name}: {raw!r} is not a number from {low:g} to {high:g}")
    return value


def _tail(path: Path, lines: int) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - MAX_LOG_BYTES))
            data = fh.read()
    except FileNotFoundError:
        return ""
    return "".join(data.decode("utf-8", "replace").splitlines(keepends=True)[-lines:])


# ---------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dask-platform agent",
                                description="Node agent of a scheduler/worker host.")
    p.add_argument("--role", required=True, choices=("scheduler", "worker"))
    p.add_argument("--settings", required=True,
                   help="ssm://<parameter>, a Pulumi.<stack>.yaml or a settings JSON file")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--advertise-host", help="address Dask processes listen on and "
                   "report (default: --host, or this host's address when --host is 0.0.0.0); "
                   f"'{IMDS}': this EC2 instance's private IPv4")
    p.add_argument("--port", type=int, help="default: ports.nodeAgent from settings")
    p.add_argument("--token-file", type=Path, help=f"bearer token file (or ${TOKEN_ENV}; "
                   "else the secret named by settings agentTokenSecretId, awaited)")
    p.add_argument("--cores", type=float, help="default: the instance type's vCPUs with "
                   f"--advertise-host {IMDS}, else this machine's usable CPUs")
    p.add_argument("--memory-gb", type=float, help="default: the instance type's memory "
                   "(at most the machine's) minus clusters.nodeReservedMemoryGb")
    p.add_argument("--tls-cert", type=Path)
    p.add_argument("--tls-key", type=Path)
    p.add_argument("--workdir", type=Path, help="state, logs and process directories "
                   "(default: $STATE_DIRECTORY or ~/.local/state/dask-platform/agent-<id>)")
    p.add_argument("--node-id", help=f"{SAFE_NAME_RULE} (default: the instance id with "
                   f"--advertise-host {IMDS}, else the host name)")
    p.add_argument("--homes", type=Path, default=None,
                   help="users' homes, for processes run as their user (default: "
                        "<workdir>/homes; /srv/homes, the shared file system, on hosts)")
    p.add_argument("--min-user-uid", type=int, default=MIN_USER_UID,
                   help="lowest uid a process may run as (default %(default)s: system "
                        "accounts are refused)")
    p.add_argument("--cold", action="store_true",
                   help="no fork server: every process is a fresh interpreter")
    return p


def _token(args: argparse.Namespace, settings: RuntimeSettings) -> str:
    if args.token_file is not None:
        token = args.token_file.read_text(encoding="utf-8").strip()
    elif os.environ.get(TOKEN_ENV, "").strip():
        token = os.environ[TOKEN_ENV].strip()
    elif settings.agent_token_secret_id:
        token = wait_for_agent_token(settings.agent_token_secret_id)
    else:
        token = ""
    if len(token) < MIN_TOKEN_CHARS:
        raise SystemExit(f"dask-platform agent: a bearer token of at least {MIN_TOKEN_CHARS} "
                         f"characters is required (--token-file, ${TOKEN_ENV}, or settings "
                         "agentTokenSecretId)")
    return token


def _identity(args: argparse.Namespace) -> tuple[str, str | None, str]:
    """(node id, advertised host or None, instance type or ""); with ``imds`` all come
    from instance metadata (the gateway names Auto Scaling nodes by instance id)."""
    if args.advertise_host == IMDS:
        found = instance_identity()
        return args.node_id or found.instance_id, found.private_ipv4, found.instance_type
    return args.node_id or socket.gethostname(), args.advertise_host, ""


def _tls(args: argparse.Namespace) -> ssl.SSLContext | None:
    if (args.tls_cert is None) != (args.tls_key is None):
        raise SystemExit("dask-platform agent: --tls-cert and --tls-key go together")
    if args.tls_cert is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(args.tls_cert, args.tls_key)
    return context


def _machine(instance_type: str) -> tuple[float, float]:
    """(cores, GiB) of this node: its instance type's shape where the platform knows it
    (the shape the settings' quota checks assume; memory no more than the machine has),
    else the CPUs this process may run on and the machine's memory."""
    memory = psutil.virtual_memory().total / (1 << 30)
    if instance_type in INSTANCE_SHAPES:
        vcpus, gib = INSTANCE_SHAPES[instance_type]
        return float(vcpus), min(memory, float(gib))
    return float(len(os.sched_getaffinity(0))), memory


def _shape(args: argparse.Namespace, settings: RuntimeSettings, node_id: str,
           advertise_host: str | None, instance_type: str) -> NodeShape:
    host = advertise_host or args.host
    if host in ("0.0.0.0", ""):
        host = socket.gethostbyname(socket.gethostname())
    machine_cores, machine_memory = _machine(instance_type)
    cores = args.cores if args.cores is not None else machine_cores
    memory = args.memory_gb if args.memory_gb is not None else (
        machine_memory - settings.clusters.node_reserved_memory_gb)
    for name, value in (("--cores", cores), ("--memory-gb", memory)):
        if value <= 0:
            raise SystemExit(f"dask-platform agent: {name} must be positive, got {value:g}")
    port_ranges = ({"scheduler": settings.ports.scheduler_range} if args.role == "scheduler"
                   else {"worker": settings.ports.worker_range,
                         "notebook": settings.ports.notebook_range})
    try:  # it names the state and cgroup directories
        safe_name(node_id, "--node-id")
    except UnsafeName as exc:
        raise SystemExit(f"dask-platform agent: {exc}") from None
    return NodeShape(node_id=node_id, role=args.role, host=host, cores=cores,
                     memory_gb=memory, port_ranges=port_ranges)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return _parser().parse_args(argv)


def resolve(args: argparse.Namespace) -> tuple[RuntimeSettings, NodeShape, str]:
    """The settings, this node's shape and the bearer token: what the command line
    leaves to defaults (instance metadata, the token secret) resolved before serving."""
    settings = load_runtime_settings(args.settings)
    shape = _shape(args, settings, *_identity(args))
    return settings, shape, _token(args, settings)


async def serve(args: argparse.Namespace) -> None:
    tls = _tls(args)
    settings, shape, token = resolve(args)
    workdir = args.workdir or default_state_dir(f"agent-{shape.node_id}")
    workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
    supervisor = Supervisor(shape, workdir,
                            confine.detect(confine.group_name(shape.node_id, workdir)),
                            warm=not args.cold, homes=args.homes,
                            min_user_uid=args.min_user_uid)
    await supervisor.start()
    stop = asyncio.Event()
    app = make_app(supervisor, token, settings.timeouts.stop_grace_seconds, stop.set)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = args.port if args.port is not None else settings.ports.node_agent
    await web.TCPSite(runner, args.host, port, ssl_context=tls).start()
    log.info("agent %s (%s, %s, runtime %s) listening on %s:%s%s", shape.node_id,
             shape.role, supervisor.capacity()["confinement"], supervisor.runtime_version,
             args.host, port, " (TLS)" if tls else "")
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()
    await supervisor.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(serve(args))
    except (AgentTokenError, MetadataUnavailable) as exc:
        raise SystemExit(f"dask-platform agent: {exc}") from None
    return 0
