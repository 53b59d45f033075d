"""The hosts' commands as the stack renders them, run against what the stack publishes:
the gateway's command line plus the settings parameter must resolve to this stack's
worker group, scheduler tags, token secret, LDAP login and listening ports, and an
agent's must reach the same token. AWS is moto's server; the stack runs under mocks."""

from __future__ import annotations

import os

from pathlib import Path

import pytest
from traitlets.config import Config

from daskplatform.audit import AUDIT_LOG_ENV
from daskplatform.aws import aws_client
from daskplatform.gateway.hub_host import advertise_address, gateway_child_argv
from daskplatform.gateway.metrics import CloudWatchPublisher, PoolFigures, WorkerMemory
from daskplatform.gateway.server import LDAP_AUTHENTICATOR, STATIC_AUTHENTICATOR, gateway_argv
from daskplatform.gateway.server import _parser as server_parser
from daskplatform.gateway.server import config_from_argv as gateway_config_from_argv
from daskplatform.host.units import AUDIT_LOG
from daskplatform.host.userdata import BOOT_FAILURES_METRIC
from daskplatform.node import agent
from daskplatform.settings import (
    ACTIVE_CLUSTERS_METRIC,
    ACTIVE_WORKERS_METRIC,
    BACKLOG_NODES_METRIC,
    CLUSTER_START_METRIC,
    IDLE_NODES_METRIC,
    QUEUED_TASKS_METRIC,
    WORKER_MEMORY_PERCENT_METRIC,
    RuntimeSettings,
)
from daskplatform.state_dir import STATE_DIRECTORY_ENV
from tests.cloud.conftest import of_short_type, one
from tests.cloud.host_units import host_units
from tests.cloud.test_hosts import user_data
from tests.node.imds_stand_in import imds_stand_in
from tools.mockrun import StackRun


def host_argv(run: StackRun, template: str, subcommand: str) -> list[str]:
    """The arguments of ``dask-platform <subcommand>`` in the unit host-setup starts on
    the host this template boots."""
    settings = RuntimeSettings.from_json(
        one(run, "Parameter", "gateway-settings").inputs["value"])
    (unit,) = [u for u in host_units(user_data(run, template), settings)
               if u.exec_start[1] == subcommand]
    return list(unit.exec_start[2:])


@pytest.fixture
def published(dev: StackRun, aws_env: str) -> RuntimeSettings:
    """The dev stack's settings parameter and its empty agent-token secret, in moto."""
    parameter = one(dev, "Parameter", "gateway-settings").inputs
    aws_client("ssm").put_parameter(Name=parameter["name"], Value=parameter["value"],
                                    Type="String", Overwrite=True)
    secrets = aws_client("secretsmanager")
    name = one(dev, "Secret", "identity-agent-token").inputs["name"]
    secrets.delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)
    secrets.create_secret(Name=name)
    return RuntimeSettings.from_json(parameter["value"])


def test_the_gateway_command_resolves_to_this_stacks_wiring(
        dev: StackRun, published: RuntimeSettings, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(STATE_DIRECTORY_ENV, str(tmp_path))  # what systemd's unit sets
    host_args = host_argv(dev, "gateway-lt", "gateway")
    assert host_args[0] == "--hub"  # JupyterHub in front of the gateway on the ALB's port
    hub = server_parser().parse_args(host_args)
    assert hub.proxy_address == "0.0.0.0:8000"  # what the ALB's target group reaches
    with imds_stand_in(monkeypatch, instance_id="i-0aaaabbbbccccdddd", local_ipv4="10.0.33.4",
                       instance_type="t3.medium"):
        advertise = advertise_address(hub)
    # What the hub host hands its gateway child.
    argv = gateway_child_argv(hub.proxy_tcp_address, gateway_argv(host_args), advertise)
    before = os.environ.get(AUDIT_LOG_ENV)
    config = gateway_config_from_argv(argv)
    # The host's trail goes to the file the CloudWatch agent ships; reading the config
    # redirects nobody's trail (the gateway's main() alone points audit.py at it).
    assert config.PoolBackend.audit_log == AUDIT_LOG
    assert os.environ.get(AUDIT_LOG_ENV) == before
    # Schedulers on the scheduler host send heartbeats to the host's private address,
    # on the port the security groups open to them (the gateway's scheduler proxy).
    assert config.PoolBackend.api_url == "http://10.0.33.4:8786/services/dask-gateway/api"
    assert config.Proxy.address == "0.0.0.0:8786"
    backend = config.PoolBackend
    assert backend.asg_name == one(dev, "Group", "workers-asg").inputs["name"]
    assert backend.stack_name == "dev"
    assert backend.agent_port == 8790 and backend.nodes == []
    backlog_alarm = one(dev, "MetricAlarm", "workers-backlog").inputs
    assert backend.metrics_namespace == backlog_alarm["namespace"]
    assert tuple(backend.worker_node) == (2, 3.5)  # a c5.large after the node reserve
    stored = aws_client("secretsmanager").get_secret_value(
        SecretId=published.agent_token_secret_id)["SecretString"]
    assert backend.agent_token == stored
    assert config.DaskGateway.authenticator_class == LDAP_AUTHENTICATOR
    assert config.PlatformAuthenticator.settings_source == argv[argv.index("--settings") + 1]
    assert backend.db_url == f"sqlite:///{tmp_path / 'gateway.sqlite'}"
    # A restarted gateway keeps the token the agents already hold.
    assert gateway_config_from_argv(argv).PoolBackend.agent_token == stored
    # Its proxy is the proxy unit, which finds it on its fixed private address and shares
    # its token through the state directory.
    assert config.Proxy.externally_managed is True
    proxy = host_argv(dev, "gateway-lt", "gateway-proxy")
    assert proxy[proxy.index("--gateway-address") + 1] == config.DaskGateway.address
    assert config.Proxy.api_token == (tmp_path / "proxy-token").read_text().strip()


@pytest.mark.parametrize("template, role", [("scheduler-lt", "scheduler"),
                                            ("workers-lt", "worker")])
def test_an_agent_command_reaches_the_gateways_token_and_advertises_its_ip(
        dev: StackRun, published: RuntimeSettings, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path, template: str, role: str) -> None:
    monkeypatch.setenv(STATE_DIRECTORY_ENV, str(tmp_path))
    gateway: Config = gateway_config_from_argv(host_argv(dev, "gateway-lt", "gateway"))
    argv = [*host_argv(dev, template, "agent"), "--cores", "1", "--memory-gb", "1"]
    with imds_stand_in(monkeypatch, instance_id="i-0fedcba987654321", local_ipv4="10.0.2.9",
                       instance_type="c5.large"):
        settings, shape, token = agent.resolve(agent.parse_args(argv))
    assert token == gateway.PoolBackend.agent_token
    assert (shape.node_id, shape.role, shape.host) == ("i-0fedcba987654321", role, "10.0.2.9")
    assert settings == published


def test_without_a_token_file_or_secret_the_gateway_says_which_is_missing(
        tmp_path: Path) -> None:
    settings = tmp_path / "settings.json"
    settings.write_text(RuntimeSettings().to_json())
    with pytest.raises(SystemExit, match="--agent-token-file is required.*agentTokenSecretId"):
        gateway_config_from_argv(["--settings", str(settings), "--temp-dir", str(tmp_path)])


def test_gateway_defaults_without_aws_names_stay_local(tmp_path: Path) -> None:
    settings = tmp_path / "settings.json"
    settings.write_text(RuntimeSettings().to_json())
    token = tmp_path / "token"
    token.write_text("x" * 32)
    base = ["--settings", str(settings), "--temp-dir", str(tmp_path / "gw"),
            "--agent-token-file", str(token)]
    config = gateway_config_from_argv(base)
    assert (config.PoolBackend.asg_name, config.PoolBackend.stack_name) == ("", "")
    assert config.PoolBackend.metrics_namespace == ""
    assert config.DaskGateway.authenticator_class == STATIC_AUTHENTICATOR
    explicit = gateway_config_from_argv([*base, "--asg-name", "g", "--stack-name", "s",
                                         "--authenticator-class", LDAP_AUTHENTICATOR])
    assert (explicit.PoolBackend.asg_name, explicit.PoolBackend.stack_name) == ("g", "s")
    assert explicit.PoolBackend.metrics_namespace == RuntimeSettings().metrics_namespace
    assert explicit.PlatformAuthenticator.settings_source == str(settings)


def _watched(run: StackRun, namespace: str) -> set[tuple[str, frozenset]]:
    """(metric, dimensions) of every alarm, or alarm query, on the platform's namespace."""
    metrics = []
    for alarm in of_short_type(run, "MetricAlarm"):
        inputs = alarm.inputs
        metrics += [inputs, *(q["metric"] for q in inputs.get("metricQueries", [])
                              if "metric" in q)]
    return {(m["metricName"], frozenset((m.get("dimensions") or {}).items()))
            for m in metrics if m.get("namespace") == namespace}


async def test_the_gateway_publishes_every_metric_the_alarms_watch(
        dev: StackRun, published: RuntimeSettings, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(STATE_DIRECTORY_ENV, str(tmp_path))
    backend = gateway_config_from_argv(host_argv(dev, "gateway-lt", "gateway")).PoolBackend
    # HostBootFailures comes from the hosts' boot (tests/cloud/test_hosts.py), the rest
    # from the gateway.
    watched = {w for w in _watched(dev, backend.metrics_namespace)
               if w[0] != BOOT_FAILURES_METRIC}
    assert {name for name, _ in watched} == {BACKLOG_NODES_METRIC, IDLE_NODES_METRIC,
                                             ACTIVE_CLUSTERS_METRIC,
                                             ACTIVE_WORKERS_METRIC, QUEUED_TASKS_METRIC,
                                             CLUSTER_START_METRIC,
                                             WORKER_MEMORY_PERCENT_METRIC}
    publisher = CloudWatchPublisher(backend.metrics_namespace, backend.asg_name)
    await publisher.publish(PoolFigures(
        active_clusters=1, active_workers=1, pending_workers=0, queued_tasks=0,
        workers=(WorkerMemory("c1", "w1", managed=1, unmanaged=1, limit=4),),
        start_latencies=(("data_analysts", 4.5),)))
    listed = aws_client("cloudwatch").list_metrics(
        Namespace=backend.metrics_namespace)["Metrics"]
    assert watched <= {(m["MetricName"], frozenset((d["Name"], d["Value"])
                                                   for d in m["Dimensions"]))
                       for m in listed}
