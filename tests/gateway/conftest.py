"""A real pool on 127.0.0.1: node agents and dask-gateway-server as child processes.

Every process a test starts is stopped at teardown: the Dask processes through their
agents, then the agents, then anything still left in their process trees.
"""

from __future__ import annotations

import base64
import gc
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
from dask_gateway import BasicAuth, Gateway

from daskplatform.gateway.server import GatewayProcess
from daskplatform.settings import (
    ClusterSettings,
    GroupQuota,
    QuotaSettings,
    RuntimeSettings,
    TimeoutSettings,
)
from tests.conftest import free_port, let_users_through

PASSWORD = "pool-test-password"
USERS = {
    "ada": ["admins"],
    "eve": ["data_engineers"],
    "ann": ["data_analysts"],
    "bob": ["data_analysts"],
    "zed": ["contractors"],
    "svc-pipeline": ["data_engineers"],  # the pipeline watcher's service account
}

WORKER = (0.5, 0.25)
"""(cores, GB) of one test worker: small, the machine is shared."""


def small_settings(max_pending_per_user: int = 50) -> RuntimeSettings:
    """Quotas scaled to tiny workers: analysts may hold two workers in total."""
    quota = dict(cluster_max_cores=1, cluster_max_memory_gb=0.5, user_max_cores=1,
                 user_max_memory_gb=0.5, notebook_cores=0.25, notebook_memory_gb=0.5)
    return RuntimeSettings(
        quotas=QuotaSettings(
            groups={
                "admins": GroupQuota(priority=3, **{k: v * 2 for k, v in quota.items()}),
                "data_engineers": GroupQuota(priority=2, **quota),
                "data_analysts": GroupQuota(priority=1, **quota),
            },
            max_pending_per_user=max_pending_per_user,
        ),
        clusters=ClusterSettings(scheduler_cores=0.25, scheduler_memory_gb=0.5,
                                 worker_cores=WORKER[0], worker_memory_gb=WORKER[1]),
        timeouts=TimeoutSettings(cluster_start_seconds=60, worker_start_seconds=60,
                                 agent_request_seconds=5, stop_grace_seconds=3),
    )


FAST_CHECKS = """
c.PoolBackend.node_check_period = 0.5
c.PoolBackend.node_lost_after = 3
c.PoolBackend.cluster_status_period = 1
c.PoolBackend.worker_status_period = 1
c.PoolBackend.cluster_heartbeat_period = 1
c.PoolBackend.cluster_heartbeat_timeout = 15
c.PoolBackend.check_timeouts_period = 2
"""
"""Traitlets overrides that keep the tests quick (production uses the defaults). The
heartbeat timeout stays generous: a scheduler confined to a quarter core on a loaded
2-core machine can miss a few one-second heartbeats while it takes a large graph."""


@dataclass
class Agent:
    node_id: str
    role: str
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def call(self, method: str, path: str, token: str) -> Any:
        request = urllib.request.Request(self.url + path, method=method,
                                         headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())


@dataclass
class Pool:
    """Agents + gateway for one test."""

    tmp: Path
    settings_path: Path
    token: str
    env: dict[str, str]
    agents: dict[str, Agent] = field(default_factory=dict)
    gateway: GatewayProcess | None = None
    proxy: subprocess.Popen[bytes] | None = None
    """The gateway's proxy when it runs apart (``start_gateway(external_proxy=True)``)."""
    api_url: str = ""
    tcp_address: str = ""
    gateway_args: list[str] = field(default_factory=list)
    discovered: set[str] = field(default_factory=set)
    """Agents the gateway must find itself (not passed as --node)."""

    def add_agent(self, node_id: str, role: str, cores: float, memory_gb: float,
                  static: bool = True, env: dict[str, str] | None = None) -> Agent:
        port = free_port()
        log_path = self.tmp / f"agent-{node_id}.log"
        argv = [sys.executable, "-m", "daskplatform.cli", "agent", "--role", role,
                "--settings", str(self.settings_path), "--host", "127.0.0.1",
                "--port", str(port), "--token-file", str(self.tmp / "token"),
                "--cores", str(cores), "--memory-gb", str(memory_gb),
                "--workdir", str(self.tmp / f"agent-{node_id}"), "--node-id", node_id]
        with log_path.open("ab") as out:  # the child keeps its copy
            process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                       env={**self.env, **(env or {})})
        agent = Agent(node_id, role, f"http://127.0.0.1:{port}", process, log_path)
        self.agents[node_id] = agent
        if not static:
            self.discovered.add(node_id)
        _wait_for(lambda: _answers(agent.url + "/v1/health"), 30,
                  f"agent {node_id} did not answer (log {log_path})")
        return agent

    def start_gateway(self, extra_config: str = "", extra_args: list[str] | None = None,
                      db: bool = False, external_proxy: bool = False) -> None:
        """Start (or restart, with the same addresses and database) the gateway; with
        ``external_proxy`` its proxy runs as a process of its own, started once."""
        if not self.gateway_args:
            proxy, tcp, address = free_port(), free_port(), f"127.0.0.1:{free_port()}"
            self.api_url = f"http://127.0.0.1:{proxy}"
            self.tcp_address = f"gateway://127.0.0.1:{tcp}"
            (self.tmp / "auth.json").write_text(json.dumps(
                {"groups": USERS, "password": PASSWORD}))
            (self.tmp / "overrides.py").write_text(FAST_CHECKS + extra_config)
            self.gateway_args = [
                "--settings", str(self.settings_path),
                "--address", address,
                "--proxy-address", f"127.0.0.1:{proxy}",
                "--proxy-tcp-address", f"127.0.0.1:{tcp}",
                "--agent-token-file", str(self.tmp / "token"),
                "--authenticator-config", str(self.tmp / "auth.json"),
                "--temp-dir", str(self.tmp / "gateway"),
                "--config", str(self.tmp / "overrides.py"),
                "--db-url", f"sqlite:///{self.tmp / 'gateway.sqlite'}" if db else "sqlite://",
                *[f"--node={a.node_id},{a.role},{a.url}" for a in self.agents.values()
                  if a.node_id not in self.discovered],
                *(["--external-proxy"] if external_proxy else []),
                *(extra_args or []),
            ]
            if external_proxy:
                self.proxy = self._start_proxy(proxy, tcp, address)
        self.gateway = GatewayProcess(self.gateway_args, self.api_url,
                                      log_path=str(self.tmp / "gateway.log"), env=self.env)
        self.gateway.start()

    def _start_proxy(self, http: int, tcp: int, gateway: str) -> subprocess.Popen[bytes]:
        with (self.tmp / "proxy.log").open("ab") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "daskplatform.cli", "gateway-proxy", "--address",
                 f"127.0.0.1:{http}", "--tcp-address", f"127.0.0.1:{tcp}",
                 "--gateway-address", gateway, "--temp-dir", str(self.tmp / "gateway"),
                 "--log-level", "info"],
                stdout=out, stderr=subprocess.STDOUT, env=self.env)

    def client(self, user: str) -> Gateway:
        return Gateway(self.api_url, proxy_address=self.tcp_address,
                       auth=BasicAuth(user, PASSWORD))

    def api(self, method: str, path: str, user: str, body: Any = None) -> tuple[int, Any]:
        """A raw gateway API call, to see status codes the client library hides."""
        credentials = base64.b64encode(f"{user}:{PASSWORD}".encode()).decode()
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.api_url + path, method=method, data=data,
            headers={"Authorization": f"Basic {credentials}",
                     "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def metrics(self) -> dict[str, Any]:
        status, body = self.api("GET", "/api/v1/pool", "ada")
        assert status == 200, body
        return body

    def processes(self, node_id: str, alive: bool = True) -> list[dict[str, Any]]:
        listing = self.agents[node_id].call("GET", "/v1/processes", self.token)["processes"]
        return [p for p in listing if not alive or p["state"] in ("starting", "running")]

    def kill_agent(self, node_id: str) -> None:
        """A node dies: its agent and every Dask process it started, at once."""
        agent = self.agents[node_id]
        pids = [p["pid"] for p in self.processes(node_id)]
        tree = [agent.process.pid, *pids]
        victims = []
        for pid in tree:
            try:
                proc = psutil.Process(pid)
                victims += [proc, *proc.children(recursive=True)]
            except psutil.NoSuchProcess:
                pass
        for proc in victims:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        agent.process.wait()

    def close(self) -> None:
        if self.gateway is not None:
            self.gateway.stop()
        if self.proxy is not None:
            _stop_tree(self.proxy)
        for agent in self.agents.values():
            if agent.process.poll() is None:
                for proc in self.processes(agent.node_id):
                    try:
                        agent.call("DELETE", f"/v1/processes/{proc['id']}?grace=2", self.token)
                    except OSError:
                        pass
            _stop_tree(agent.process)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


def _wait_for(predicate: Callable[[], Any], timeout: float, message: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.25)
    raise AssertionError(message)


def _stop_tree(process: subprocess.Popen[bytes]) -> None:
    try:
        children = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for child in children:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass


wait_for = _wait_for


def new_pool(directory: Path, settings: RuntimeSettings | None = None,
             env: dict[str, str] | None = None) -> Pool:
    """A pool in ``directory`` with a fresh agent token; the caller closes it."""
    let_users_through(directory)
    token = secrets.token_urlsafe(24)
    (directory / "token").write_text(token)
    settings_path = directory / "settings.json"
    settings_path.write_text((settings or small_settings()).to_json())
    return Pool(directory, settings_path, token, {**os.environ, **(env or {})})


def started_pool(make_pool: Callable[..., Pool], workers: tuple[float, float],
                 count: int = 2, prefix: str = "") -> Pool:
    """A gateway over one 2-core scheduler node and ``count`` worker nodes of
    ``workers`` (cores, GB), named ``{prefix}sched-1``, ``{prefix}work-1`` ..."""
    pool = make_pool()
    pool.add_agent(f"{prefix}sched-1", "scheduler", cores=2, memory_gb=2)
    for index in range(1, count + 1):
        pool.add_agent(f"{prefix}work-{index}", "worker", cores=workers[0],
                       memory_gb=workers[1])
    pool.start_gateway()
    return pool


@pytest.fixture
def make_pool(tmp_path: Path) -> Iterator[Callable[..., Pool]]:
    """Factory: ``make_pool(settings, env=...)``; everything is stopped at teardown."""
    pools: list[Pool] = []

    def make(settings: RuntimeSettings | None = None,
             env: dict[str, str] | None = None) -> Pool:
        pool = new_pool(tmp_path, settings, env)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.close()


@pytest.fixture(autouse=True)
def collect_gateway_clients() -> Iterator[None]:
    """Collect dropped dask_gateway clients on this thread.

    A ``Gateway`` collected on its own IO-loop thread closes itself synchronously from
    inside that loop and deadlocks (a dask_gateway client quirk); collecting here avoids it.
    """
    yield
    gc.collect()
