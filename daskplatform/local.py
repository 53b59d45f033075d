"""``dask-platform local``: the whole platform on this machine, on 127.0.0.1 only.

The same runtime as on AWS with stand-ins only where AWS or FreeIPA would be: a
throwaway slapd with the FreeIPA-shaped demo directory, moto in server mode (buckets,
the settings SSM parameter, the LDAP bind secret), one scheduler-role and several
worker-role node agents sized from this machine, and the gateway with the pool backend
and the LDAP authenticator (JupyterHub too with ``--hub``). Settings come from
``Pulumi.dev.yaml``, so local mode and the dev stack share one source. On Ctrl-C or
SIGTERM every process it started is stopped, Dask processes first.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import threading
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import psutil

from daskplatform.aws import ENDPOINT_ENV, aws_client
from daskplatform.gateway.children import Children, tail, wait_http
from daskplatform.gateway.directory import NodeSpec
from daskplatform.identity.hub import SERVICE_PREFIX
from daskplatform.identity.slapd import DEMO_USERS, Slapd, SlapdNotInstalled, load_users
from daskplatform.settings import (
    BUCKET_KINDS,
    RuntimeSettings,
    SettingsError,
    load_stack_file,
    node_capacity,
)
from daskplatform.stack_names import StackNames
from daskplatform.user_access import closed_folders, explain

"""The stack's four buckets (components/storage.py), created empty in moto."""
SETTINGS_PARAMETER = "/dask-platform/local/runtime-settings"
"""Where the hosts read their settings, as the stack publishes them on AWS."""
BIND_SECRET = "dask-platform-local/ldap-bind-password"
AUDIT_BUCKET = "dask-platform-local-audit"
ALERT_TOPIC = "dask-platform-local-alerts"
"""Budget alerts (moto's SNS keeps what is published)."""
REGION = "eu-west-1"


def say(message: str) -> None:
    """Progress on stdout; a closed stdout must never stop the shutdown."""
    try:
        print(message, flush=True)
    except OSError:
        pass


def port_is_free(port: int) -> bool:
    """Whether a server could listen there now (as servers do, ignoring TIME_WAIT)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class AgentShape:
    node_id: str
    role: str
    cores: float
    memory_gb: float


def agent_shapes(settings: RuntimeSettings, workers: int) -> list[AgentShape]:
    """One scheduler node and ``workers`` worker nodes sharing this machine.

    The scheduler node offers what the stack's scheduler host does, so local mode holds
    as many clusters at once as AWS (an idle scheduler takes a few percent of a core and
    60 MB, far less than its reservation). Worker nodes split the CPUs and half the
    memory, but each holds at least two default workers, so a small laptop can still
    show quotas (cores are then over-committed: confinement caps each process, not the
    sum).
    """
    cpus = float(len(os.sched_getaffinity(0)))
    memory_gb = psutil.virtual_memory().total / 2**30
    clusters = settings.clusters
    shapes = [AgentShape("local-scheduler", "scheduler",
                         *node_capacity(settings.scheduler, clusters))]
    for index in range(1, workers + 1):
        shapes.append(AgentShape(
            f"local-worker-{index}", "worker",
            round(max(cpus / workers, 2 * clusters.worker_cores), 2),
            round(max(memory_gb / 2 / workers, 2 * clusters.worker_memory_gb), 2)))
    return shapes


def port_slices(low: int, high: int, count: int) -> list[tuple[int, int]]:
    """Disjoint sub-ranges, so agents sharing one host never hand out the same port."""
    size = (high - low + 1) // count
    if size < 4:
        raise SettingsError(f"ports range {low}-{high} is too small for {count} local "
                            "worker nodes")
    return [(low + i * size, low + (i + 1) * size - 1) for i in range(count)]


class LocalPlatform:
    """Starts the pieces in dependency order; ``close`` undoes exactly what started."""

    def __init__(self, args: argparse.Namespace, state: Path) -> None:
        self.args = args
        self.state = state
        self.children = Children(state / "logs")
        self.stack = contextlib.ExitStack()
        self.token = secrets.token_urlsafe(32)
        self.agents: list[tuple[AgentShape, str]] = []
        # With --hub, clients reach the gateway through the hub, as on AWS.
        self.gateway_url = (f"http://127.0.0.1:{args.hub_port}{SERVICE_PREFIX}" if args.hub
                            else f"http://127.0.0.1:{args.port}")
        # Scheduler traffic shares the gateway's HTTP port.
        self.proxy_address = f"gateway://127.0.0.1:{args.port}"
        self.env = dict(os.environ)
        self.users = DEMO_USERS + load_users(args.demo_users)
        self.closed = closed_folders(state.parent.resolve())
        self.run_as_users = os.geteuid() == 0 and not self.closed
        """As on hosts, every Dask process under its user's uid; that takes root, and an
        installation other users can read."""

    # ------------------------------------------------------------------ start

    def start(self) -> None:
        (self.state / "logs").mkdir(parents=True, exist_ok=True)
        self.state.chmod(0o711)  # users reach their homes and process folders below it
        if self.run_as_users:
            say("local: every Dask process runs under its user's uid from the directory, "
                "as on hosts")
        elif os.geteuid() == 0:
            say(f"local: every Dask process runs as root: {explain(self.closed)}")
        else:
            say(f"local: not root, so every Dask process runs as you (uid {os.geteuid()}); "
                "as root, each user's run under their own uid, as on hosts")
        slapd = self._start_slapd()
        settings = self._start_aws(slapd)
        self._start_agents(settings)
        self._start_gateway(slapd)

    def _start_slapd(self) -> Slapd:
        say("local: starting the directory (slapd, FreeIPA-shaped demo users) ...")
        slapd = Slapd(self.state / "ldap", users=self.users)
        slapd.start()
        self.stack.callback(slapd.stop)
        say(f"local:   LDAP at {slapd.ldaps_url} (StartTLS {slapd.starttls_url})")
        return slapd

    def _start_aws(self, slapd: Slapd) -> RuntimeSettings:
        from moto.server import ThreadedMotoServer

        from daskplatform.aws_standin import create_data_roles, enforce_vended_credentials

        say("local: starting the AWS stand-in (moto server: S3, SSM, Secrets Manager, SNS, "
            "STS, IAM) ...")
        enforce_vended_credentials()
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per AWS call
        port = free_port()
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        self.stack.callback(server.stop)
        endpoint = f"http://127.0.0.1:{port}"
        aws_env = {ENDPOINT_ENV: endpoint, "AWS_ENDPOINT_URL": endpoint,
                   "AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local",
                   "AWS_DEFAULT_REGION": REGION}
        self.env.update(aws_env)
        os.environ.update(aws_env)  # this process reads settings and secrets too

        s3 = aws_client("s3")
        buckets = {kind: f"dask-platform-local-{kind}" for kind in BUCKET_KINDS}
        for bucket in buckets.values():
            s3.create_bucket(Bucket=bucket,
                             CreateBucketConfiguration={"LocationConstraint": REGION})
        aws_client("secretsmanager").create_secret(
            Name=BIND_SECRET, SecretString=slapd.bind_password)
        self.alert_topic_arn = aws_client("sns").create_topic(Name=ALERT_TOPIC)["TopicArn"]
        # The directory's CA reaches the gateway and the hub in the settings, as FreeIPA's
        # does on AWS (ldapCaBundle).
        settings = load_stack_file(str(self.args.stack)).runtime(BIND_SECRET).model_copy(
            update={"ldap_url": slapd.ldaps_url, "ldap_base_dn": slapd.base_dn,
                    "ldap_bind_dn": slapd.bind_dn,
                    "ldap_ca_bundle": slapd.ca_file.read_text(),
                    "data_roles": StackNames("dask-platform", "local").data_roles()})
        # The gateway's identity in moto stands for the gateway host's role.
        create_data_roles(aws_client("iam"), settings, buckets,
                          aws_client("sts").get_caller_identity()["Arn"])
        aws_client("ssm").put_parameter(Name=SETTINGS_PARAMETER, Type="String",
                                        Value=settings.to_json())
        say(f"local:   AWS at {endpoint} (AWS_ENDPOINT_URL); buckets "
            f"dask-platform-local-{{{','.join(BUCKET_KINDS)}}}, settings in "
            f"ssm://{SETTINGS_PARAMETER}; a data role per group (dask-platform credentials)")
        return settings

    def _start_agents(self, settings: RuntimeSettings) -> None:
        shapes = agent_shapes(settings, self.args.workers)
        say(f"local: starting {len(shapes)} node agents (1 scheduler, "
            f"{self.args.workers} worker) ...")
        token_file = self.state / "agent-token"
        token_file.touch(mode=0o600)
        token_file.write_text(self.token)
        # Each agent reads its own copy of the settings with a disjoint worker port
        # slice: agents sharing one host would otherwise hand out the same ports.
        slices = iter(port_slices(*settings.ports.worker_range, self.args.workers))
        notebook_slices = iter(port_slices(*settings.ports.notebook_range, self.args.workers))
        started = []
        for shape in shapes:
            ports = settings.ports
            if shape.role == "worker":
                ports = ports.model_copy(update={"worker_range": next(slices),
                                                 "notebook_range": next(notebook_slices)})
            node_settings = self.state / f"{shape.node_id}.json"
            node_settings.write_text(settings.model_copy(update={"ports": ports}).to_json())
            port = free_port()
            self.children.start(shape.node_id, [
                sys.executable, "-m", "daskplatform.cli", "agent", "--role", shape.role,
                "--settings", str(node_settings), "--host", "127.0.0.1", "--port", str(port),
                "--token-file", str(token_file), "--cores", str(shape.cores),
                "--memory-gb", str(shape.memory_gb), "--node-id", shape.node_id,
                "--workdir", str(self.state / "agents" / shape.node_id),
                "--homes", str(self.state / "homes")], self.env)
            self.stack.callback(self._stop_agent, shape.node_id, f"http://127.0.0.1:{port}")
            started.append((shape, f"http://127.0.0.1:{port}"))
        for shape, url in started:
            process = self.children.processes[shape.node_id]
            wait_http(f"{url}/v1/health", lambda p=process: p.poll() is None,
                      f"agent {shape.node_id}", self.children.log(shape.node_id))
            confinement = self._agent_call(url, "GET", "/v1/capacity")["confinement"]
            say(f"local:   {shape.node_id}: {shape.cores:g} cores, {shape.memory_gb:g} GB, "
                f"confinement {confinement}")
            self.agents.append((shape, url))

    def _start_gateway(self, slapd: Slapd) -> None:
        say("local: starting the gateway (pool backend, LDAP login"
            + (", behind JupyterHub as on the gateway host) ..." if self.args.hub else ") ..."))
        # The settings name slapd, so the gateway picks the LDAP authenticator itself.
        nodes = [NodeSpec(shape.node_id, shape.role, url) for shape, url in self.agents]
        address = f"127.0.0.1:{free_port()}"
        self._start_proxy(address)
        argv = [
            sys.executable, "-m", "daskplatform.cli", "gateway",
            *(["--run-as-users"] if self.run_as_users else []),
            "--settings", f"ssm://{SETTINGS_PARAMETER}",
            "--address", address, "--external-proxy",
            *self._http_args(),
            "--agent-token-file", str(self.state / "agent-token"),
            "--db-url", "sqlite://",  # in memory: clusters stop with the gateway
            "--temp-dir", str(self.state / "gateway"),
            "--audit-bucket", AUDIT_BUCKET, "--alert-topic-arn", self.alert_topic_arn,
            *[f"--node={n.node_id},{n.role},{n.agent_url}" for n in nodes],
        ]
        process = self.children.start("gateway", argv, self.env)
        # With --hub the hub stops first (up to 30 s), then the gateway (up to 60 s).
        self.stack.callback(self.children.stop, "gateway", 100 if self.args.hub else 60)
        wait_http(f"{self.gateway_url}/api/health", lambda: process.poll() is None,
                  "the gateway", self.children.log("gateway"))
        if self.args.hub:
            say(f"local:   JupyterLab: open http://127.0.0.1:{self.args.hub_port}/ and log "
                "in as a demo user (engineer1 / engineer1-demo): your server starts on a "
                "worker node; in a notebook, Gateway() needs no arguments")

    def _start_proxy(self, gateway_address: str) -> None:
        """The gateway's proxy as a process of its own on --port, as on the gateway host
        (its unit), so a gateway restart keeps clients' connections; stopped last."""
        self.children.start("gateway-proxy", [
            sys.executable, "-m", "daskplatform.cli", "gateway-proxy",
            "--address", f"127.0.0.1:{self.args.port}", "--gateway-address", gateway_address,
            "--temp-dir", str(self.state / "gateway")], self.env)
        self.stack.callback(self.children.stop, "gateway-proxy")

    def _http_args(self) -> list[str]:
        """The gateway's HTTP on --port; with --hub, JupyterHub in front of it on
        --hub-port (``dask-platform gateway --hub``, the gateway host's own mode)."""
        if not self.args.hub:
            return ["--proxy-address", f"127.0.0.1:{self.args.port}"]
        return ["--hub", "--proxy-address", f"127.0.0.1:{self.args.hub_port}",
                "--proxy-tcp-address", f"127.0.0.1:{self.args.port}",
                "--hub-api-port", str(free_port()),
                "--hub-proxy-api-port", str(free_port())]

    # ------------------------------------------------------------------ stop

    def _agent_call(self, url: str, method: str, path: str) -> dict:
        request = urllib.request.Request(url + path, method=method,
                                         headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def _stop_agent(self, node_id: str, url: str) -> None:
        """Dask processes first (the agent leaves them running when it stops)."""
        with contextlib.suppress(OSError, ValueError):
            for proc in self._agent_call(url, "GET", "/v1/processes")["processes"]:
                if proc["state"] in ("starting", "running"):
                    self._agent_call(url, "DELETE", f"/v1/processes/{proc['id']}?grace=5")
        self.children.stop(node_id)

    def close(self) -> None:
        say("local: stopping ...")
        self.stack.close()
        say("local: stopped")


# ---------------------------------------------------------------------- demo


async def run_demo(gateway_url: str, proxy_address: str) -> None:
    """Two users, their quotas, a computation; prints what happened.

    Asynchronous clients: the synchronous dask_gateway client closes twice on exit
    and prints a spurious traceback.
    """
    from aiohttp import ClientResponseError
    from dask_gateway import BasicAuth, Gateway

    passwords = {u.username: u.password for u in DEMO_USERS}

    def gateway(username: str) -> Gateway:
        return Gateway(gateway_url, proxy_address=proxy_address, asynchronous=True,
                       auth=BasicAuth(username, passwords[username]))

    say("demo: two users, their quotas, a computation")
    for username in ("engineer1", "analyst1"):
        async with gateway(username) as client:
            fields = (await client.cluster_options())._fields
            say(f"demo:   {username}: each cluster up to {fields['worker_cores'].max:g} "
                f"worker cores and {fields['worker_memory'].max:g} GB")
    async with gateway("engineer1") as client, client.new_cluster() as cluster:
        await cluster.scale(2)
        async with cluster.get_client(set_as_default=False) as dask_client:
            await dask_client.wait_for_workers(2, timeout=120)
            total = await dask_client.submit(sum, range(1_000_001))
            say(f"demo:   engineer1: cluster {cluster.name} with 2 workers computed "
                f"sum(range(1_000_001)) = {total}")
    async with gateway("analyst1") as client, client.new_cluster() as cluster:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            await cluster.scale(4)
        capped = [str(w.message) for w in caught]
        say(f"demo:   analyst1 asked for 4 workers: "
            f"{capped[0] if capped else 'granted (no cap reported)'}")
    try:
        async with gateway("outsider1") as client:
            await client.cluster_options()
        say("demo:   outsider1: unexpectedly allowed")
    except ClientResponseError as exc:
        say(f"demo:   outsider1 (in no platform group) is refused: HTTP {exc.status}")
    say("demo: done")


# ---------------------------------------------------------------------- main


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dask-platform local",
                                description="The whole platform on this machine (127.0.0.1).")
    p.add_argument("--port", type=int, default=8000,
                   help="gateway HTTP port: API and dashboards (default %(default)s)")
    p.add_argument("--workers", type=int, default=3,
                   help="worker node agents (default %(default)s)")
    p.add_argument("--stack", type=Path, default=Path("Pulumi.dev.yaml"),
                   help="stack settings file (default %(default)s)")
    p.add_argument("--hub", action="store_true", help="also run JupyterHub")
    p.add_argument("--hub-port", type=int, default=8001,
                   help="JupyterHub port with --hub (default %(default)s)")
    p.add_argument("--demo-users", type=int, default=0, metavar="N",
                   help="also users user01..userNN (password <name>-demo) for load tests: "
                        "every tenth an admin, then alternately engineers and analysts "
                        "(default %(default)s)")
    p.add_argument("--demo", action="store_true",
                   help="run a short scenario once ready and print what happened")
    p.add_argument("--once", action="store_true", help="exit after starting (and --demo)")
    p.add_argument("--state-dir", type=Path, default=None,
                   help="keep state and logs here (default: a temporary directory, removed)")
    return p


def _check_args(args: argparse.Namespace) -> str | None:
    if not args.stack.exists():
        return (f"--stack {args.stack}: no such file; run from the repository root or "
                "pass --stack path/to/Pulumi.<stack>.yaml")
    if not 1 <= args.workers <= 16:
        return f"--workers must be between 1 and 16, got {args.workers}"
    if not 0 <= args.demo_users <= 99:
        return f"--demo-users must be between 0 and 99, got {args.demo_users}"
    ports = {"--port": args.port, **({"--hub-port": args.hub_port} if args.hub else {})}
    for option, port in ports.items():
        if not 1 <= port <= 65535:
            return f"{option} must be between 1 and 65535, got {port}"
        if not port_is_free(port):
            return f"{option} {port}: 127.0.0.1:{port} is in use; choose another with {option}"
    if args.hub and args.hub_port == args.port:
        return "--hub-port must differ from --port"
    return None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    problem = _check_args(args)
    if problem:
        print(f"dask-platform local: {problem}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def interrupt(signum: int, _: FrameType | None) -> None:
        raise KeyboardInterrupt  # while starting: unwind, then stop what started

    def on_signal(signum: int, _: FrameType | None) -> None:
        stop.set()

    previous = {signum: signal.signal(signum, interrupt)
                for signum in (signal.SIGINT, signal.SIGTERM)}
    state = args.state_dir or Path(tempfile.mkdtemp(prefix="dask-platform-local-"))
    platform = LocalPlatform(args, state)
    code = 0
    try:
        platform.start()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, on_signal)
        say(f"ready: {platform.gateway_url}")
        say("local: demo users (password): " + ", ".join(
            f"{u.username} ({u.password})" for u in DEMO_USERS))
        if args.demo_users:
            say(f"local: load-test users user01..user{args.demo_users:02d} (password "
                "<name>-demo): every tenth in admins, even ones in data_engineers, odd ones "
                "in data_analysts")
        if args.demo and not stop.is_set():
            asyncio.run(run_demo(platform.gateway_url, platform.proxy_address))
        if not args.once:
            say("local: serving; Ctrl-C or SIGTERM stops everything")
            while not stop.wait(1):
                dead = platform.children.dead()
                if dead:
                    name = dead[0]
                    print(f"dask-platform local: {name} exited; its log:\n"
                          f"{tail(platform.children.log(name))}", file=sys.stderr)
                    code = 1
                    break
    except KeyboardInterrupt:
        code = 130
    except (SlapdNotInstalled, RuntimeError, SettingsError, OSError) as exc:
        print(f"dask-platform local: {exc}", file=sys.stderr)
        code = 1
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):  # stopping is not interruptible
            signal.signal(signum, signal.SIG_IGN)
        platform.close()
        if args.state_dir is None:
            shutil.rmtree(state, ignore_errors=True)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return code
