"""Time to first result: N concurrent users each create a cluster, scale it to 2
workers, wait for them and run one task. Runs the pool backend (node agents with warm
interpreters) and stock dask-gateway ``UnsafeLocalBackend`` in the same run, at the
settings' default shapes (schedulers of 0.25 cores / 0.5 GB on a scheduler node shaped
like the default scheduler host, workers of 1 core / 1.5 GB on nodes shaped like the
default worker node type, users in data_engineers with its default quotas).

    python bench/cluster_latency.py --users 1,10,20,30

Everything listens on 127.0.0.1 and is stopped at the end. Not a test: figures depend on
the machine (see docs/gateway.md for measured ones).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path

from dask_gateway import BasicAuth, Gateway

from daskplatform.gateway.server import GatewayProcess
from daskplatform.processes import stop_process
from daskplatform.settings import (
    ClusterSettings,
    QuotaSettings,
    RuntimeSettings,
    SchedulerHostSettings,
    WorkerPoolSettings,
    node_capacity,
)

DEFAULTS = ClusterSettings()
WORKER_CORES, WORKER_GB = DEFAULTS.worker_cores, DEFAULTS.worker_memory_gb
WORKERS_PER_CLUSTER = 2
WORKER_NODE = node_capacity(WorkerPoolSettings(), DEFAULTS)
SCHEDULER_NODE = node_capacity(SchedulerHostSettings(), DEFAULTS)


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(url)


def _settings() -> RuntimeSettings:
    """The defaults: every bench user is a data engineer (4 cores / 8 GB each)."""
    return RuntimeSettings(quotas=QuotaSettings(), clusters=DEFAULTS)


class Platform:
    """Agents + a gateway process for one backend; ``api``/``tcp`` for clients."""

    def __init__(self, tmp: Path, stack: ExitStack) -> None:
        self.tmp, self.stack = tmp, stack
        self.proxy, self.tcp = _port(), _port()
        self.api = f"http://127.0.0.1:{self.proxy}"
        self.tcp_address = f"gateway://127.0.0.1:{self.tcp}"

    def _child(self, argv: list[str], log: str) -> subprocess.Popen[bytes]:
        with open(self.tmp / log, "ab") as out:  # the child keeps its copy
            process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        self.stack.callback(stop_process, process, 30)
        return process

    def start_pool(self, users: int) -> None:
        settings = _settings()
        settings_path = self.tmp / "settings.json"
        settings_path.write_text(settings.to_json())
        token = self.tmp / "token"
        token.write_text(secrets.token_urlsafe(24))
        # Room for one more cluster: the warm-up's processes may still be stopping.
        workers = (users + 1) * WORKERS_PER_CLUSTER
        nodes = [("sched", "scheduler", *SCHEDULER_NODE)]
        per_node = int(min(WORKER_NODE[0] / WORKER_CORES, WORKER_NODE[1] / WORKER_GB))
        nodes += [(f"work-{i}", "worker", *WORKER_NODE)
                  for i in range(-(-workers // per_node))]
        node_args = []
        for index, (node_id, role, cores, memory) in enumerate(nodes):
            port = _port()
            # All agents share one host here: give each its own slice of the port range,
            # as separate hosts would have.
            low = settings.ports.worker_range[0] + 40 * index
            own = settings.model_copy(update={"ports": settings.ports.model_copy(
                update={"worker_range": (low, low + 39)})})
            agent_settings = self.tmp / f"settings-{node_id}.json"
            agent_settings.write_text(own.to_json())
            self._child([sys.executable, "-m", "daskplatform.cli", "agent", "--role", role,
                         "--settings", str(agent_settings), "--port", str(port),
                         "--token-file", str(token), "--cores", str(cores),
                         "--memory-gb", str(memory), "--node-id", node_id,
                         "--workdir", str(self.tmp / node_id)], f"agent-{node_id}.log")
            _wait_http(f"http://127.0.0.1:{port}/v1/health")
            node_args.append(f"--node={node_id},{role},http://127.0.0.1:{port}")
        (self.tmp / "auth.json").write_text(json.dumps(
            {"groups": {f"user{i}": ["data_engineers"] for i in range(users)}}))
        gateway = GatewayProcess(
            ["--settings", str(settings_path), "--address", f"127.0.0.1:{_port()}",
             "--proxy-address", f"127.0.0.1:{self.proxy}",
             "--proxy-tcp-address", f"127.0.0.1:{self.tcp}", "--agent-token-file", str(token),
             "--authenticator-config", str(self.tmp / "auth.json"), "--db-url", "sqlite://",
             "--temp-dir", str(self.tmp / "gateway"), *node_args],
            self.api, log_path=str(self.tmp / "gateway.log"))
        gateway.start()
        self.stack.callback(gateway.stop)

    def start_stock(self) -> None:
        config = self.tmp / "stock_config.py"
        config.write_text(f"""
c.DaskGateway.address = "127.0.0.1:{_port()}"
c.DaskGateway.backend_class = "dask_gateway_server.backends.local.UnsafeLocalBackend"
c.Proxy.address = "127.0.0.1:{self.proxy}"
c.Proxy.tcp_address = "127.0.0.1:{self.tcp}"
c.ClusterConfig.scheduler_cmd = {[sys.executable, "-m", "distributed.cli.dask_scheduler"]!r}
c.ClusterConfig.worker_cmd = {[sys.executable, "-m", "distributed.cli.dask_worker"]!r}
c.ClusterConfig.worker_memory = "{int(WORKER_GB * 1024)}M"
c.ClusterConfig.worker_cores = {int(WORKER_CORES)}
c.ClusterConfig.scheduler_memory = "{int(DEFAULTS.scheduler_memory_gb * 1024)}M"
c.UnsafeLocalBackend.clusters_directory = "{self.tmp / 'stock-clusters'}"
""")
        self._child([sys.executable, "-m", "dask_gateway_server", "-f", str(config)],
                    "stock-gateway.log")
        _wait_http(self.api + "/api/health")


async def _one_user(api: str, tcp: str, user: str) -> float:
    start = time.perf_counter()
    async with Gateway(api, proxy_address=tcp, auth=BasicAuth(user, "bench"),
                       asynchronous=True) as gateway:
        cluster = await gateway.new_cluster()
        try:
            await cluster.scale(WORKERS_PER_CLUSTER)
            async with cluster.get_client(set_as_default=False) as client:
                await client.wait_for_workers(WORKERS_PER_CLUSTER, timeout=300)
                assert await client.submit(lambda x: x + 1, 1) == 2
                elapsed = time.perf_counter() - start
        finally:
            await cluster.shutdown()
    return elapsed


async def _round(api: str, tcp: str, users: int) -> list[float]:
    return list(await asyncio.gather(*(_one_user(api, tcp, f"user{i}") for i in range(users))))


def _print_logs_on_error(tmp: Path) -> None:
    if sys.exc_info()[0] is not None:
        for log in sorted(tmp.glob("*.log")):
            print(f"--- {log.name}", log.read_text()[-3000:], file=sys.stderr)


def _summary(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    p95 = ordered[min(len(ordered) - 1, max(0, round(0.95 * len(ordered)) - 1))]
    return {"p50": statistics.median(ordered), "p95": p95, "max": ordered[-1]}


def run(sizes: list[int]) -> list[dict[str, object]]:
    rows = []
    for users in sizes:
        results = {}
        for backend in ("pool", "stock"):
            with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
                stack.callback(_print_logs_on_error, Path(tmp))
                platform = Platform(Path(tmp), stack)
                if backend == "pool":
                    platform.start_pool(users)
                else:
                    platform.start_stock()
                asyncio.run(_round(platform.api, platform.tcp_address, 1))  # warm-up
                results[backend] = _summary(
                    asyncio.run(_round(platform.api, platform.tcp_address, users)))
        rows.append({"users": users, **{f"{b}_{k}": v for b, s in results.items()
                                        for k, v in s.items()},
                     "ratio_p95": results["pool"]["p95"] / results["stock"]["p95"]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", default="1,10,20,30",
                        help="comma-separated concurrent user counts (default %(default)s)")
    args = parser.parse_args()
    sizes = [int(n) for n in args.users.split(",")]
    print(f"cpus={os.cpu_count()}  workers/cluster={WORKERS_PER_CLUSTER}  "
          f"time to first result, seconds")
    print(f"{'users':>5}  {'pool p50':>8} {'p95':>6} {'max':>6}   "
          f"{'stock p50':>9} {'p95':>6} {'max':>6}   {'p95 ratio':>9}")
    for row in run(sizes):
        print(f"{row['users']:>5}  {row['pool_p50']:>8.2f} {row['pool_p95']:>6.2f} "
              f"{row['pool_max']:>6.2f}   {row['stock_p50']:>9.2f} {row['stock_p95']:>6.2f} "
              f"{row['stock_max']:>6.2f}   {row['ratio_p95']:>9.2f}")


if __name__ == "__main__":
    main()
