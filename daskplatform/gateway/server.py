"""dask-gateway-server with the pool backend: one config builder for every way it runs
(``dask-platform gateway`` on the gateway host, ``local`` mode, tests), an in-process
runner and a subprocess runner.

On the gateway host the command line is just ``--hub --settings ssm://<parameter>`` and
its addresses (``--hub``: JupyterHub in front, ``daskplatform.gateway.hub_host``): the
worker group, the stack (to find the scheduler host by its tags), the agent token's
secret, the LDAP login and the metrics namespace all follow from the settings.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from dask_gateway_server.app import DaskGateway
from traitlets.config import Config

from daskplatform.audit import AUDIT_LOG_ENV
from daskplatform.agent_token import MIN_TOKEN_CHARS, AgentTokenError, ensure_agent_token
from daskplatform.gateway.dask_config import dask_config, spill_disk_per_memory
from daskplatform.gateway.directory import NodeSpec
from daskplatform.gateway.proxy import proxy_token
from daskplatform.gateway.quotas import GIB, cluster_options_for
from daskplatform.gateway.usage import node_prices
from daskplatform.processes import stop_process
from daskplatform.runtime_config import load_runtime_settings
from daskplatform.settings import RuntimeSettings, node_capacity
from daskplatform.state_dir import default_state_dir

QUEUE_WAIT_SECONDS = 1800
"""How long a worker or a cluster may wait in line for room before dask-gateway gives up
on it (added to ``timeouts.workerStartSeconds``/``clusterStartSeconds``); by then
scale-out has added nodes, or clusters have stopped (idle ones after the idle timeout)."""

ENCRYPT_KEY_FILE = "gateway-db.key"
"""Database encryption key kept in ``temp_dir`` when none is given (local mode)."""

ENCRYPT_KEYS_ENV = "DASK_GATEWAY_ENCRYPT_KEYS"

LDAP_AUTHENTICATOR = "daskplatform.identity.gateway_auth.PlatformAuthenticator"
"""The default when the settings name an LDAP directory (AWS, local mode)."""
STATIC_AUTHENTICATOR = "daskplatform.gateway.auth_static.StaticGroupsAuthenticator"
"""The default without one (tests with fixed users and groups)."""


def _encrypt_keys(db_url: str, temp_dir: str, given: Sequence[str] | None) -> list[str]:
    """Keys for a persistent database: given, from the environment, or a private key file
    in ``temp_dir`` (reused, so a restarted gateway reads its own database)."""
    if db_url in ("sqlite://", "sqlite:///:memory:"):
        return []
    if given:
        return list(given)
    if os.environ.get(ENCRYPT_KEYS_ENV):
        return [k for k in os.environ[ENCRYPT_KEYS_ENV].split(";") if k]
    path = Path(temp_dir) / ENCRYPT_KEY_FILE
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())
    return [path.read_text().strip()]


def gateway_config(
    settings: RuntimeSettings,
    *,
    address: str,
    proxy_address: str,
    proxy_tcp_address: str | None,
    nodes: list[NodeSpec] | None,
    asg_name: str | None,
    agent_token: str,
    db_url: str,
    authenticator_class: str,
    authenticator_config: dict,
    temp_dir: str,
    encrypt_keys: Sequence[str] | None = None,
    metrics_namespace: str = "",
    stack_name: str = "",
    prefix: str = "",
    api_url: str = "",
    run_as_users: bool = False,
    settings_source: str = "",
    audit_bucket: str = "",
    alert_topic_arn: str = "",
    proxy_token: str | None = None,
) -> Config:
    """Everything a ``DaskGateway`` needs to run the pool backend with the settings' quotas.

    ``authenticator_config`` holds traits of ``authenticator_class`` (e.g. ``groups`` and
    ``password`` of ``StaticGroupsAuthenticator``). With a persistent ``db_url`` clusters
    survive a gateway restart; in memory they are stopped with the gateway. Nodes are
    ``nodes`` plus, when named, the ``asg_name`` group's workers and ``stack_name``'s
    tagged scheduler host. ``prefix`` is the URL path the HTTP proxy serves under
    (behind JupyterHub: ``/services/dask-gateway``). ``api_url`` is where schedulers send
    heartbeats (default: the proxy's own address, reachable only where it listens).
    With ``run_as_users`` every process runs under its user's uid (agents run as root),
    and a user without one in the directory is refused. ``temp_dir`` keeps a roll-out's
    progress; ``settings_source`` is re-read for the version a roll-out brings. With
    ``proxy_token`` the proxy runs as a service of its own (``gateway/proxy.py``) with
    that token, and a gateway restart keeps clients' connections to their schedulers.
    """
    c = Config()
    c.DaskGateway.address = address
    c.DaskGateway.backend_class = "daskplatform.gateway.backend.PoolBackend"
    c.DaskGateway.authenticator_class = authenticator_class
    c.DaskGateway.config_file = str(Path(temp_dir) / "no-config-file.py")
    auth_section = authenticator_class.rsplit(".", 1)[-1]
    for name, value in authenticator_config.items():
        c[auth_section][name] = value

    c.Proxy.address = proxy_address
    c.Proxy.prefix = prefix
    if proxy_tcp_address:
        c.Proxy.tcp_address = proxy_tcp_address
    if proxy_token is not None:
        c.Proxy.externally_managed = True
        c.Proxy.api_token = proxy_token

    backend = c.PoolBackend
    if api_url:
        backend.api_url = api_url
    backend.nodes = [spec.to_dict() for spec in nodes or []]
    backend.asg_name = asg_name or ""
    backend.stack_name = stack_name
    backend.agent_port = settings.ports.node_agent
    backend.agent_token = agent_token
    backend.agent_timeout = settings.timeouts.agent_request_seconds
    backend.stop_grace = settings.timeouts.stop_grace_seconds
    backend.max_pending_per_user = settings.quotas.max_pending_per_user
    backend.metrics_namespace = metrics_namespace
    worker_node = node_capacity(settings.workers, settings.clusters)
    backend.worker_node = worker_node
    backend.cluster_options = cluster_options_for(
        settings.quotas, settings.clusters, worker_node, settings.workers.instance_type,
        require_uid=run_as_users)
    # Both waits include the time in line for room; a placed process gets the settings'.
    backend.cluster_start_timeout = settings.timeouts.cluster_start_seconds + QUEUE_WAIT_SECONDS
    backend.cluster_connect_timeout = settings.timeouts.cluster_start_seconds
    backend.worker_start_timeout = settings.timeouts.worker_start_seconds + QUEUE_WAIT_SECONDS
    backend.worker_connect_timeout = settings.timeouts.worker_start_seconds
    backend.db_url = db_url
    backend.db_encrypt_keys = _encrypt_keys(db_url, temp_dir, encrypt_keys)
    backend.stop_clusters_on_shutdown = not backend.db_encrypt_keys
    backend.dask_config = dask_config(settings.clusters)
    admins = settings.quotas.groups["admins"]
    c.StaticGroupsAuthenticator.admin_groups = list(admins.ldap_groups or ("admins",))
    backend.spill_disk_per_memory = spill_disk_per_memory(settings)
    backend.orphan_grace = settings.timeouts.orphan_grace_seconds
    backend.drain_seconds = settings.timeouts.drain_seconds
    backend.state_dir = temp_dir
    backend.node_prices = {kind: [price.cores, price.memory_gb, price.usd_per_hour]
                           for kind, price in node_prices(settings).items()}
    backend.budgets = {name: quota.monthly_budget_usd
                       for name, quota in settings.quotas.groups.items()
                       if quota.monthly_budget_usd is not None}
    backend.audit_bucket = audit_bucket
    backend.alert_topic_arn = alert_topic_arn
    backend.settings_source = settings_source
    backend.data_roles = dict(settings.data_roles)
    backend.data_session_seconds = settings.data_access.session_minutes * 60
    backend.pipeline_user = settings.pipeline.service_user

    cluster = c.PoolClusterConfig
    cluster.scheduler_cores = settings.clusters.scheduler_cores
    cluster.scheduler_memory = int(settings.clusters.scheduler_memory_gb * GIB)
    cluster.scheduler_cpu_limit = settings.clusters.scheduler_cpu_limit
    cluster.scheduler_memory_limit = int(settings.clusters.scheduler_memory_limit_gb * GIB)
    cluster.worker_cores = settings.clusters.worker_cores
    cluster.worker_memory = int(settings.clusters.worker_memory_gb * GIB)
    cluster.idle_timeout = settings.quotas.idle_timeout_minutes * 60.0
    return c


def create_gateway(config: Config) -> DaskGateway:
    """An initialised gateway; ``await gw.setup()`` starts it, ``await gw.cleanup()`` stops it."""
    gateway = DaskGateway(config=config)
    gateway.initialize([])
    return gateway


@contextlib.asynccontextmanager
async def running_gateway(config: Config) -> AsyncIterator[DaskGateway]:
    """Run the gateway in this event loop (tests, local mode) and stop it afterwards."""
    gateway = create_gateway(config)
    try:
        await gateway.setup()
        yield gateway
    finally:
        await gateway.cleanup()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


class GatewayProcess:
    """``dask-platform gateway ...`` as a child process, ready once its API answers."""

    def __init__(self, argv: Sequence[str], api_url: str, log_path: str | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.argv = [sys.executable, "-m", "daskplatform.cli", "gateway", *argv]
        self.api_url = api_url.rstrip("/")
        self.log_path = log_path
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> GatewayProcess:
        with open(self.log_path or os.devnull, "ab") as log:  # the child keeps its copy
            self.process = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                            env=self.env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.process.returncode} "
                                   f"(log: {self.log_path})")
            try:
                with urllib.request.urlopen(self.api_url + "/api/health", timeout=2):
                    return self
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"gateway not healthy at {self.api_url} within {timeout:g}s")

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM (the gateway shuts down cleanly), SIGKILL if it does not."""
        if self.process is not None:
            stop_process(self.process, timeout)


def _parse_node(text: str) -> NodeSpec:
    parts = text.split(",", 2)
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(
            f"--node {text!r}: expected NODE_ID,ROLE,AGENT_URL (role scheduler or worker)")
    try:
        return NodeSpec(*parts)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--node: {exc}") from None


def _hub_parser(add_help: bool) -> argparse.ArgumentParser:
    """The options that make the gateway host run JupyterHub in front of the gateway;
    everything else on the command line is the gateway's own (passed to it as is)."""
    p = argparse.ArgumentParser(prog="dask-platform gateway", add_help=add_help,
                                allow_abbrev=False,
                                description="dask-gateway-server with the pool backend")
    p.add_argument("--proxy-address", default="127.0.0.1:8000",
                   help="HTTP proxy: API and dashboards; with --hub, JupyterHub's public "
                        "address (default %(default)s)")
    p.add_argument("--proxy-tcp-address", default=None,
                   help="scheduler TLS proxy (default: same as --proxy-address); with "
                        "--hub also the gateway's HTTP API (default 127.0.0.1:8786)")
    hub = p.add_argument_group("gateway host with JupyterHub (daskplatform.gateway.hub_host)")
    hub.add_argument("--hub", action="store_true",
                     help="run JupyterHub (LDAP login) on --proxy-address with the gateway "
                          "as its service at /services/dask-gateway/; the gateway's API "
                          "and scheduler proxy share --proxy-tcp-address")
    hub.add_argument("--advertise-host", default=None,
                     help="with --hub: the address schedulers and notebook servers on "
                          "other hosts reach the gateway's API (and the hub's) at; 'imds': "
                          "this EC2 instance's "
                          "private IPv4 (default: the --proxy-tcp-address host, which "
                          "must then not be 0.0.0.0)")
    hub.add_argument("--hub-api-port", type=_port, default=8081,
                     help="with --hub: the hub's API, for the gateway and for notebook "
                          "servers on worker nodes, on the --proxy-tcp-address host "
                          "(default %(default)s)")
    hub.add_argument("--hub-proxy-api-port", type=_port, default=8001,
                     help="with --hub: configurable-http-proxy's API on 127.0.0.1 "
                          "(default %(default)s)")
    return p


def _port(text: str) -> int:
    port = int(text) if text.isdigit() else 0
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: a port must be between 1 and 65535")
    return port


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dask-platform gateway", parents=[_hub_parser(False)],
                                allow_abbrev=False,
                                description="dask-gateway-server with the pool backend")
    p.add_argument("--settings", required=True,
                   help="ssm://<parameter>, a Pulumi.<stack>.yaml or a runtime JSON file")
    p.add_argument("--address", default="127.0.0.1:0", help="private API (default %(default)s)")
    p.add_argument("--external-proxy", action="store_true",
                   help="the proxy runs as a service of its own (dask-platform "
                        "gateway-proxy, with the same --temp-dir and --gateway-address "
                        "this --address, a fixed port): restarting the gateway keeps "
                        "clients' connections to their schedulers")
    p.add_argument("--prefix", default="",
                   help="URL path prefix of the HTTP proxy (set by --hub)")
    p.add_argument("--run-as-users", action="store_true",
                   help="run every Dask process under its user's own uid from the "
                        "directory (the node agents must run as root; on by default on "
                        "hosts); refuse users without one")
    p.add_argument("--api-url", default=None,
                   help="the gateway API's URL as schedulers reach it for heartbeats "
                        "(default: the HTTP proxy's address; --hub sets it from "
                        "--advertise-host)")
    p.add_argument("--node", action="append", type=_parse_node, default=[],
                   help="static node NODE_ID,ROLE,AGENT_URL (repeatable)")
    p.add_argument("--asg-name", default=None,
                   help="worker Auto Scaling group (default: settings workerAsgName)")
    p.add_argument("--stack-name", default=None,
                   help="find this stack's scheduler host by its tags "
                        "(default: settings stackName)")
    p.add_argument("--agent-token-file", default=None,
                   help="file holding the node agents' bearer token (default: the secret "
                        "named by settings agentTokenSecretId, generated on first start)")
    p.add_argument("--db-url", default=None,
                   help="SQLAlchemy URL (default: sqlite file in --temp-dir)")
    p.add_argument("--authenticator-class", default=None,
                   help=f"default: {LDAP_AUTHENTICATOR} when the settings name an "
                        f"ldapUrl, else {STATIC_AUTHENTICATOR}")
    p.add_argument("--authenticator-config", default=None,
                   help="JSON file: traits of the authenticator class")
    p.add_argument("--temp-dir", default=None,
                   help="state directory: database, key (default: $STATE_DIRECTORY or "
                        "~/.local/state/dask-platform/gateway)")
    p.add_argument("--metrics-namespace", default=None,
                   help="CloudWatch namespace for PendingWorkers (default: settings "
                        "metricsNamespace when there is a worker group, else not published)")
    p.add_argument("--audit-log", default=None,
                   help="the audit trail, JSON lines (default: audit.log in --temp-dir)")
    p.add_argument("--audit-bucket", default="",
                   help="S3 bucket for daily usage reports (default: none)")
    p.add_argument("--alert-topic-arn", default="",
                   help="SNS topic for budget alerts (default: none, logged only)")
    p.add_argument("--config", default=None,
                   help="extra traitlets config file loaded last (overrides, e.g. timeouts)")
    return p


def _agent_token(args: argparse.Namespace, settings: RuntimeSettings) -> str:
    if args.agent_token_file:
        token = Path(args.agent_token_file).read_text(encoding="utf-8").strip()
    elif settings.agent_token_secret_id:
        try:
            token = ensure_agent_token(settings.agent_token_secret_id)
        except AgentTokenError as exc:
            raise SystemExit(f"dask-platform gateway: {exc}") from None
    else:
        raise SystemExit("dask-platform gateway: --agent-token-file is required when the "
                         "settings name no agentTokenSecretId")
    if len(token) < MIN_TOKEN_CHARS:
        raise SystemExit(f"dask-platform gateway: the agent token must have at least "
                         f"{MIN_TOKEN_CHARS} characters")
    return token


def _authenticator(args: argparse.Namespace, settings: RuntimeSettings) -> tuple[str, dict]:
    """The class and its traits: LDAP logins whenever the settings name a directory,
    reading the same settings source the gateway was given."""
    traits: dict = {}
    if args.authenticator_config:
        traits = json.loads(Path(args.authenticator_config).read_text(encoding="utf-8"))
    name = args.authenticator_class or (
        LDAP_AUTHENTICATOR if settings.ldap_url else STATIC_AUTHENTICATOR)
    if name == LDAP_AUTHENTICATOR:
        traits.setdefault("settings_source", args.settings)
    return name, traits


def config_from_argv(argv: list[str] | None = None) -> Config:
    """The gateway's config from its command line, with defaults from the settings."""
    args = _parser().parse_args(argv)
    settings = load_runtime_settings(args.settings)
    temp_dir = Path(args.temp_dir) if args.temp_dir else default_state_dir("gateway")
    temp_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    asg_name = settings.worker_asg_name if args.asg_name is None else args.asg_name
    metrics_namespace = args.metrics_namespace
    if metrics_namespace is None:
        metrics_namespace = settings.metrics_namespace if asg_name else ""
    authenticator_class, authenticator_config = _authenticator(args, settings)
    if args.external_proxy and args.address.rpartition(":")[2] in ("", "0"):
        raise SystemExit(f"dask-platform gateway: --external-proxy needs a fixed --address "
                         f"port (got {args.address}): the proxy finds the gateway there")
    config = gateway_config(
        settings,
        address=args.address, proxy_address=args.proxy_address,
        proxy_tcp_address=args.proxy_tcp_address, nodes=args.node,
        asg_name=asg_name,
        stack_name=settings.stack_name if args.stack_name is None else args.stack_name,
        agent_token=_agent_token(args, settings),
        db_url=args.db_url or f"sqlite:///{temp_dir / 'gateway.sqlite'}",
        authenticator_class=authenticator_class, authenticator_config=authenticator_config,
        temp_dir=str(temp_dir), metrics_namespace=metrics_namespace, prefix=args.prefix,
        api_url=args.api_url or "",
        run_as_users=args.run_as_users,
        settings_source=args.settings,
        audit_bucket=args.audit_bucket, alert_topic_arn=args.alert_topic_arn,
        proxy_token=proxy_token(temp_dir) if args.external_proxy else None,
    )
    if args.config:
        config.DaskGateway.config_file = args.config
    # Where this process's trail goes; main() points audit.py at it (never a caller's
    # environment: a test reading a host's config must not redirect its own trail).
    config.PoolBackend.audit_log = args.audit_log or str(temp_dir / "audit.log")
    return config


def gateway_argv(argv: list[str]) -> list[str]:
    """The gateway's own options in ``argv``: all but --hub, its companions and the
    addresses the hub host gives its gateway child itself."""
    return _hub_parser(False).parse_known_args(argv)[1]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    if args.hub:
        # Imported here: only the gateway host installs JupyterHub (the ``hub`` extra).
        from daskplatform.gateway.hub_host import run_hub_host

        return run_hub_host(args, gateway_argv(argv))
    config = config_from_argv(argv)
    # One trail for the authenticator and the backend of this process (audit.py).
    os.environ[AUDIT_LOG_ENV] = config.PoolBackend.audit_log
    gateway = create_gateway(config)
    gateway.start()
    return 0
