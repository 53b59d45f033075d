"""Hosts: hardened launch templates, the bootstrap stub, the worker pool and its scaling."""

from __future__ import annotations

import base64
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from components.bootstrap import runtime_package
from daskplatform.host.units import AUDIT_LOG, LOG_FILE
from daskplatform.host.userdata import BOOT_FAILURES_METRIC, UV_VERSION
from daskplatform.runtime_version import source_version
from daskplatform.settings import RuntimeSettings
from tests.cloud.conftest import (
    CUSTOM_WORKERS,
    LDAP_PASSWORD,
    host_interface,
    of_short_type,
    one,
)
from tests.cloud.host_units import directives, heredoc, host_setup_argv, host_units
from tools.mockrun import StackRun

TEMPLATES = {"gateway-lt": "gateway", "scheduler-lt": "scheduler", "workers-lt": "worker"}


def user_data(run: StackRun, template: str) -> str:
    return base64.b64decode(one(run, "LaunchTemplate", template).inputs["userData"]).decode()


def test_every_host_requires_imdsv2_with_hop_limit_1(dev: StackRun) -> None:
    for template in of_short_type(dev, "LaunchTemplate"):
        options = template.inputs["metadataOptions"]
        assert options["httpTokens"] == "required", template.name
        assert options["httpPutResponseHopLimit"] == 1, template.name


def test_every_root_volume_is_encrypted_gp3_and_no_host_gets_a_public_ip(dev: StackRun) -> None:
    for template in of_short_type(dev, "LaunchTemplate"):
        (volume,) = template.inputs["blockDeviceMappings"]
        assert volume["ebs"]["encrypted"] == "true" and volume["ebs"]["volumeType"] == "gp3"
        interface = host_interface(dev, template.name)
        # A single host's own interface is in a private subnet and never asks for one.
        assert interface.get("associatePublicIpAddress", "false") == "false"


def test_instance_types_follow_the_settings(dev: StackRun, custom: StackRun) -> None:
    types = {t.name: t.inputs["instanceType"] for t in of_short_type(dev, "LaunchTemplate")}
    assert types == {
        "gateway-lt": "t3.medium",
        "scheduler-lt": "m5.2xlarge",
        "workers-lt": "c5.large",
    }
    assert one(custom, "LaunchTemplate", "workers-lt").inputs["instanceType"] == "c5.2xlarge"


def test_single_hosts_run_from_their_template_in_a_private_subnet(dev: StackRun) -> None:
    private = {s.id for s in of_short_type(dev, "Subnet") if s.inputs["tags"]["tier"] == "private"}
    for host in ("gateway", "scheduler"):
        template = one(dev, "LaunchTemplate", f"{host}-lt")
        instance = one(dev, "Instance", f"{host}-instance")
        assert instance.inputs["launchTemplate"] == {"id": template.id, "version": "$Latest"}
        assert host_interface(dev, f"{host}-lt")["subnetId"] in private


def test_each_host_gets_its_own_instance_profile(dev: StackRun) -> None:
    for template, role in TEMPLATES.items():
        profile = one(dev, "InstanceProfile", f"identity-{role}-profile")
        assert one(dev, "LaunchTemplate", template).inputs["iamInstanceProfile"] == {
            "arn": profile.outputs["arn"]
        }


def published_settings(run: StackRun) -> RuntimeSettings:
    return RuntimeSettings.from_json(one(run, "Parameter", "gateway-settings").inputs["value"])


@pytest.mark.parametrize("template", TEMPLATES)
def test_user_data_is_a_small_stub_that_hands_over_to_host_setup(dev: StackRun,
                                                                template: str) -> None:
    text = user_data(dev, template)
    assert len(text.encode()) < 4096
    role = TEMPLATES[template]
    efs = one(dev, "FileSystem", "storage-efs").id
    shared, homes = (one(dev, "AccessPoint", f"storage-efs-{n}").id for n in ("shared", "homes"))
    # The gateway alone writes usage reports and archived homes, and sends budget alerts.
    gateway_only = ["--audit-bucket", one(dev, "Bucket", "storage-audit").outputs["bucket"],
                    "--alert-topic-arn", one(dev, "Topic", "monitoring-alerts").outputs["arn"],
                    # ... and runs the pipeline watcher (tests/cloud/test_alerts_and_drops.py)
                    "--drop-queue-url", one(dev, "Queue", "drops-queue").outputs["url"],
                    "--raw-bucket", one(dev, "Bucket", "storage-raw").outputs["bucket"],
                    "--processed-bucket",
                    one(dev, "Bucket", "storage-processed").outputs["bucket"],
                    "--pipeline-password-secret", "dask-platform/dev/pipeline-password"]
    assert host_setup_argv(text) == [
        "--role", role, "--settings", "ssm:///dask-platform/dev/runtime-settings",
        "--region", "eu-west-1", "--file-system", efs, "--shared-access-point", shared,
        "--homes-access-point", homes, *(gateway_only if role == "gateway" else [])]
    artifacts = one(dev, "Bucket", "storage-artifacts").outputs["bucket"]
    version = published_settings(dev).runtime_version
    assert version == source_version()
    key = one(dev, "BucketObjectv2", "storage-runtime-package").inputs["key"]
    assert f'retry aws s3 cp "s3://{artifacts}/{key}" ' in text
    # Exactly uv.lock's versions (the archive carries it), the role's extras, not editable,
    # in the version's own environment, which the services' link then names.
    extras = {"gateway": "--extra hub", "scheduler": "--extra runtime",
              "worker": "--extra runtime --extra pipeline --extra notebook"}[role]
    assert (f"retry env UV_PROJECT_ENVIRONMENT=/opt/dask-platform/venvs/{version} "
            "/opt/dask-platform/uv/bin/uv sync -q \\\n  --frozen --no-dev --no-editable "
            f"{extras} --project /opt/dask-platform/src/{version}\n") in text
    assert f"ln -sfn /opt/dask-platform/venvs/{version} /opt/dask-platform/venv\n" in text
    assert f"echo {version} > /opt/dask-platform/runtime-version\n" in text
    assert json.loads(heredoc(text, "/opt/dask-platform/install.json")) == {
        "bucket": artifacts, "region": "eu-west-1", "extras": extras.split()[1::2]}
    assert f'pip install -q "uv=={UV_VERSION}"' in text


@pytest.mark.parametrize("template", TEMPLATES)
def test_the_stub_ships_its_log_first_and_retries_every_network_step(
        dev: StackRun, template: str) -> None:
    """Boot failures reach CloudWatch: its agent runs before any step that can fail for
    want of a route; and NAT routes or IAM that settle late only delay the boot."""
    text = user_data(dev, template)
    lines = text.splitlines()
    assert lines[4] == "exec >> /var/log/dask-platform-boot.log 2>&1"
    network = [i for i, line in enumerate(lines)
               if re.search(r"\b(dnf|npm|pip|aws s3|amazon-cloudwatch-agent-ctl)\b", line)
               and not line.startswith(("#", "  aws cloudwatch"))]
    assert all(lines[i].startswith("retry ") for i in network), [lines[i] for i in network]
    assert "amazon-cloudwatch-agent" in lines[network[0]]
    assert "amazon-cloudwatch-agent-ctl" in lines[network[1]]
    cloudwatch = json.loads(heredoc(text, "/opt/dask-platform/cloudwatch.json"))
    collected = cloudwatch["logs"]["logs_collected"]["files"]["collect_list"]
    group = one(dev, "LogGroup", f"monitoring-{TEMPLATES[template]}-logs").inputs["name"]
    assert {c["file_path"] for c in collected} == {
        "/var/log/dask-platform-boot.log", "/var/log/cloud-init-output.log", LOG_FILE,
        AUDIT_LOG}
    assert {c["log_group_name"] for c in collected} == {group}


@pytest.mark.parametrize("template", TEMPLATES)
def test_a_failed_boot_is_counted_and_the_stub_is_safe_to_run_again(
        dev: StackRun, template: str) -> None:
    text = user_data(dev, template)
    assert "trap 'failed $LINENO' ERR" in text
    metric = re.search(r"put-metric-data --namespace '([^']+)' --metric-name (\w+) \\\n"
                       r"\s+--dimensions Role=(\w+)", text)
    assert metric and metric.groups() == ("DaskPlatform/dev", BOOT_FAILURES_METRIC,
                                          TEMPLATES[template])
    alarm = one(dev, "MetricAlarm", f"monitoring-{TEMPLATES[template]}-boot-failures").inputs
    assert (alarm["namespace"], alarm["metricName"], alarm["dimensions"]) == (
        "DaskPlatform/dev", BOOT_FAILURES_METRIC, {"Role": TEMPLATES[template]})
    assert alarm["alarmActions"] == [one(dev, "Topic", "monitoring-alerts").outputs["arn"]]
    # Nothing appends twice or fails on a second run: host-setup owns fstab and accounts.
    assert ">>" not in text.replace("exec >> /var/log/dask-platform-boot.log", "")
    assert "useradd" not in text and "fstab" not in text
    assert "[ -x /opt/dask-platform/venvs/" in text and "|| python3.11 -m venv" in text


@pytest.mark.parametrize("template", ["scheduler-lt", "workers-lt"])
def test_agent_hosts_run_the_agent_bounded_and_keep_dask_on_restart(
        dev: StackRun, template: str) -> None:
    """Restarting an agent must leave its node's Dask processes running; the agent keeps
    only what starting each user's processes under their own uid takes."""
    role = TEMPLATES[template]
    (unit,) = host_units(user_data(dev, template), published_settings(dev))
    found = directives(unit.render())
    assert found["KillMode"] == ["process"] and "Delegate" not in found
    assert "User" not in found and "CAP_SETUID" in found["CapabilityBoundingSet"][0]
    assert found["StandardOutput"] == [f"append:{LOG_FILE}"]
    assert shlex.split(found["ExecStart"][0]) == [
        "/opt/dask-platform/venv/bin/dask-platform", "agent", "--role", role, "--settings",
        "ssm:///dask-platform/dev/runtime-settings", "--host", "0.0.0.0",
        "--advertise-host", "imds", "--homes", "/srv/homes"]
    assert unit.health_url == "http://127.0.0.1:8790/v1/health"


def test_the_gateway_unit_stops_its_children_with_it(dev: StackRun) -> None:
    _proxy, unit, _watcher = host_units(user_data(dev, "gateway-lt"), published_settings(dev))
    found = directives(unit.render())
    assert found["KillMode"] == ["control-group"] and found["TimeoutStopSec"] == ["120"]
    assert found["StateDirectory"] == ["dask-platform"] and "User" not in found
    assert found["StandardOutput"] == [f"append:{LOG_FILE}"]
    argv = shlex.split(found["ExecStart"][0])
    audit = one(dev, "Bucket", "storage-audit").outputs["bucket"]
    topic = one(dev, "Topic", "monitoring-alerts").outputs["arn"]
    assert argv[1:3] == ["gateway", "--hub"] and argv[-9:] == [
        "--advertise-host", "imds", "--run-as-users", "--audit-log", AUDIT_LOG,
        "--audit-bucket", audit, "--alert-topic-arn", topic]
    assert " --hub-api-port 8081 " in f" {shlex.join(argv)} "  # notebooks call the hub
    assert unit.health_url == "http://127.0.0.1:8000/hub/health"
    # Its proxy is a unit of its own, so the gateway's restarts keep clients connected.
    assert " --address 127.0.0.1:8785 --external-proxy " in f" {shlex.join(argv)} "
    assert found["Wants"] == ["network-online.target dask-platform-proxy.service"]


def test_the_gateway_hosts_proxy_outlives_gateway_restarts(dev: StackRun) -> None:
    """Clients' scheduler connections (8786) go through a unit the gateway's restarts and
    upgrades leave running; it finds the gateway's private API on a fixed loopback port."""
    proxy, unit, _watcher = host_units(user_data(dev, "gateway-lt"), published_settings(dev))
    found = directives(proxy.render())
    assert proxy.name == "dask-platform-proxy.service" != unit.name
    assert shlex.split(found["ExecStart"][0]) == [
        "/opt/dask-platform/venv/bin/dask-platform", "gateway-proxy",
        "--address", "0.0.0.0:8786", "--gateway-address", "127.0.0.1:8785"]
    assert found["StateDirectory"] == ["dask-platform"]  # its token is the gateway's
    assert found["CapabilityBoundingSet"] == [""] and found["NoNewPrivileges"] == ["yes"]
    assert found["Restart"] == ["always"] and found["Wants"] == ["network-online.target"]
    assert proxy.health_url == "http://127.0.0.1:8786/services/dask-gateway/api/health"


def test_dev_and_hosts_pin_the_same_uv() -> None:
    dev = (Path(__file__).resolve().parents[2] / "dev").read_text()
    assert f"UV_VERSION={UV_VERSION}\n" in dev


def test_the_runtime_archive_installs_from_the_lock_with_host_setup_in_it(
        tmp_path: Path) -> None:
    """Unpack the archive the stack uploads and install it the way a host does
    (``uv sync --frozen``, dependencies aside: they are what the lock pins)."""
    for name, asset in runtime_package().assets.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(asset.path, tmp_path / name)
    uv = Path(__file__).resolve().parents[2] / ".uv" / "bin" / "uv"
    check = subprocess.run([str(uv), "lock", "--check", "--project", str(tmp_path)],
                           capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stderr  # the lock matches the archive's pyproject
    subprocess.run([sys.executable, "-c", "from setuptools import setup; setup()", "-q",
                    "build_py", "--build-lib", "built"],
                   cwd=tmp_path, check=True, capture_output=True)
    built = tmp_path / "built" / "daskplatform"
    assert (built / "host" / "setup.py").exists() and (built / "host" / "units.py").exists()


def test_user_data_carries_no_secret(custom: StackRun) -> None:
    for template in TEMPLATES:
        text = user_data(custom, template)
        assert LDAP_PASSWORD not in text and "secretsmanager" not in text.lower()


def test_worker_pool_bounds_follow_the_settings(dev: StackRun, custom: StackRun) -> None:
    for run, (low, high, cooldown) in ((dev, (5, 20, 300)), (custom, (2, 7, 600))):
        group = one(run, "Group", "workers-asg").inputs
        assert (group["minSize"], group["maxSize"], group["defaultCooldown"]) == (
            low,
            high,
            cooldown,
        )
        private = [s for s in of_short_type(run, "Subnet") if s.inputs["tags"]["tier"] == "private"]
        if private:
            assert sorted(group["vpcZoneIdentifiers"]) == sorted(s.id for s in private)
        assert group["launchTemplate"]["id"] == one(run, "LaunchTemplate", "workers-lt").id
        # Running nodes change runtime through `dask-platform rollout`, never an instance
        # refresh (which gives up on busy nodes after an hour, after `pulumi up` returned).
        assert "instanceRefresh" not in group


def alarm_and_policy(run: StackRun, alarm: str) -> tuple[dict, dict]:
    """The alarm's inputs and the inputs of the one scaling policy its action names."""
    inputs = one(run, "MetricAlarm", alarm).inputs
    (action,) = inputs["alarmActions"]
    (policy,) = [p for p in of_short_type(run, "Policy") if p.outputs["arn"] == action]
    return inputs, policy.inputs


def _step_for(policy: dict, breach: float) -> int:
    """The adjustment a step policy makes for an alarm breached by ``breach``."""
    (found,) = [step["scalingAdjustment"] for step in policy["stepAdjustments"]
                if step.get("metricIntervalLowerBound", -1e9) <= breach
                < (step.get("metricIntervalUpperBound") or 1e9)]
    return found


@pytest.mark.parametrize("run_name, out_cpu, maximum", [("dev", 70, 20),
                                                        ("custom", CUSTOM_WORKERS["scaleOutCpu"],
                                                         CUSTOM_WORKERS["max"])])
def test_busy_cpu_adds_a_node_and_a_backlog_adds_all_the_nodes_it_needs_at_once(
        request: pytest.FixtureRequest, run_name: str, out_cpu: int, maximum: int) -> None:
    run: StackRun = request.getfixturevalue(run_name)
    asg = one(run, "Group", "workers-asg")
    high, scale_out = alarm_and_policy(run, "workers-cpu-high")
    assert (high["namespace"], high["metricName"]) == ("AWS/EC2", "CPUUtilization")
    assert (high["comparisonOperator"], high["threshold"]) == ("GreaterThanThreshold", out_cpu)
    assert high["dimensions"] == {"AutoScalingGroupName": asg.outputs["name"]}
    assert scale_out["autoscalingGroupName"] == asg.outputs["name"]
    assert _step_for(scale_out, 5) == 1
    backlog, policy = alarm_and_policy(run, "workers-backlog")
    assert (backlog["namespace"], backlog["metricName"]) == (f"DaskPlatform/{run_name}",
                                                             "BacklogNodes")
    # The gateway publishes it per group (daskplatform/gateway/metrics.py); an alarm
    # without the dimension would watch a metric nobody puts.
    assert backlog["dimensions"] == {"AutoScalingGroupName":
                                     f"dask-platform-{run_name}-workers"}
    assert (backlog["comparisonOperator"], backlog["threshold"]) == ("GreaterThanThreshold",
                                                                     0.5)
    assert policy["policyType"] == "StepScaling"
    # A backlog of n nodes adds n, at most 20 (the service's steps) or workers.max a time.
    for nodes in (1, 2, 7, 19, 20, 25, 50):
        assert _step_for(policy, nodes - 0.5) == min(nodes, 20, maximum), nodes


def test_scale_in_removes_only_idle_nodes_and_only_while_cpu_is_low(dev: StackRun) -> None:
    alarm, policy = alarm_and_policy(dev, "workers-cpu-low")
    queries = {q["id"]: q for q in alarm["metricQueries"]}
    cpu, idle = queries["cpu"]["metric"], queries["idle"]["metric"]
    assert (cpu["namespace"], cpu["metricName"], cpu["stat"]) == ("AWS/EC2", "CPUUtilization",
                                                                 "Average")
    assert cpu["dimensions"] == {"AutoScalingGroupName": "dask-platform-dev-workers"}
    assert (idle["namespace"], idle["metricName"]) == ("DaskPlatform/dev", "IdleNodes")
    assert idle["dimensions"] == {"AutoScalingGroupName": "dask-platform-dev-workers"}
    assert queries["removable"]["expression"] == "IF(cpu < 30, idle, 0)"
    assert (alarm["comparisonOperator"], alarm["threshold"]) == ("GreaterThanThreshold", 0.5)
    assert alarm["evaluationPeriods"] * 60 == 300  # workers.cooldownSeconds
    for nodes in (1, 3, 20):
        assert _step_for(policy, nodes - 0.5) == -nodes
    assert {p.name for p in of_short_type(dev, "Policy")} == {
        "workers-scale-out-cpu", "workers-scale-out-backlog", "workers-scale-in-idle"}


@pytest.mark.parametrize("host", [("Instance", "gateway-instance"),
                                  ("Instance", "scheduler-instance"), ("Group", "workers-asg")])
def test_hosts_boot_only_once_what_their_boot_needs_exists(dev: StackRun,
                                                           host: tuple[str, str]) -> None:
    """No first-boot race: AWS APIs and package mirrors reachable (internet gateway, NAT
    routes, S3 endpoint), EFS mount targets up, the runtime archive uploaded."""
    waits_for = one(dev, *host).dependencies
    needed = [one(dev, "InternetGateway", "network-igw"),
              one(dev, "VpcEndpoint", "network-s3-endpoint"),
              *(one(dev, "Route", f"network-private-{i}-default") for i in (0, 1)),
              *(one(dev, "MountTarget", f"storage-efs-mount-{i}") for i in (0, 1)),
              one(dev, "BucketObjectv2", "storage-runtime-package")]
    assert {r.name for r in needed if r.urn not in waits_for} == set()


def test_the_alb_waits_for_the_audit_policy_that_lets_it_log(dev: StackRun) -> None:
    assert one(dev, "BucketPolicy", "storage-audit-policy").urn in one(
        dev, "LoadBalancer", "alb-lb").dependencies


def test_workers_join_the_group_only_once_booted_and_up_waits_for_them(dev: StackRun) -> None:
    group = one(dev, "Group", "workers-asg").inputs
    (hook,) = group["initialLifecycleHooks"]
    assert hook == {"name": "dask-platform-boot", "lifecycleTransition":
                    "autoscaling:EC2_INSTANCE_LAUNCHING", "defaultResult": "ABANDON",
                    "heartbeatTimeout": 1200}
    assert group["waitForCapacityTimeout"] == "30m"
    assert published_settings(dev).worker_boot_hook == hook["name"]


def test_a_warm_pool_of_stopped_initialised_nodes_follows_the_settings(
        dev: StackRun, custom: StackRun) -> None:
    group = one(dev, "Group", "workers-asg").inputs
    assert group["warmPool"] == {"poolState": "Stopped", "minSize": 2,
                                 "instanceReusePolicy": {"reuseOnScaleIn": True}}
    assert "warmPool" not in one(custom, "Group", "workers-asg").inputs  # warmPoolMin 0
