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

from components.bootstrap import AGENT_ENV_FILE, AGENT_UNIT, runtime_package
from tests.cloud.conftest import CUSTOM_WORKERS, LDAP_PASSWORD, of_short_type, one
from tests.cloud.host_units import (
    agent_argv,
    agent_environment,
    directives,
    heredoc,
    packaged_unit,
)
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
        (interface,) = template.inputs["networkInterfaces"]
        assert interface["associatePublicIpAddress"] == "false"


def test_instance_types_follow_the_settings(dev: StackRun, custom: StackRun) -> None:
    types = {t.name: t.inputs["instanceType"] for t in of_short_type(dev, "LaunchTemplate")}
    assert types == {
        "gateway-lt": "t3.medium",
        "scheduler-lt": "c5.xlarge",
        "workers-lt": "c5.large",
    }
    assert one(custom, "LaunchTemplate", "workers-lt").inputs["instanceType"] == "c5.2xlarge"


def test_single_hosts_run_from_their_template_in_a_private_subnet(dev: StackRun) -> None:
    private = {s.id for s in of_short_type(dev, "Subnet") if s.inputs["tags"]["tier"] == "private"}
    for host in ("gateway", "scheduler"):
        template = one(dev, "LaunchTemplate", f"{host}-lt")
        instance = one(dev, "Instance", f"{host}-instance")
        assert instance.inputs["launchTemplate"]["id"] == template.id
        assert template.inputs["networkInterfaces"][0]["subnetId"] in private


def test_each_host_gets_its_own_instance_profile(dev: StackRun) -> None:
    for template, role in TEMPLATES.items():
        profile = one(dev, "InstanceProfile", f"identity-{role}-profile")
        assert one(dev, "LaunchTemplate", template).inputs["iamInstanceProfile"] == {
            "arn": profile.outputs["arn"]
        }


@pytest.mark.parametrize("template", TEMPLATES)
def test_user_data_is_a_small_stub_that_runs_the_role(dev: StackRun, template: str) -> None:
    text = user_data(dev, template)
    assert len(text.encode()) < 4096
    parameter = "ssm:///dask-platform/dev/runtime-settings"
    role = TEMPLATES[template]
    if role == "gateway":
        assert (f"dask-platform gateway --hub --settings {parameter} "
                "--proxy-address 0.0.0.0:8000 --proxy-tcp-address 0.0.0.0:8786\n") in text
        assert "TimeoutStopSec=120\n" in text
        assert "StateDirectory=dask-platform\n" in text
    else:
        assert agent_environment(text) == {"ROLE": role, "SETTINGS": parameter,
                                           "AWS_DEFAULT_REGION": "eu-west-1"}
        assert agent_argv(text) == ["agent", "--role", role, "--settings", parameter,
                                    "--host", "0.0.0.0", "--advertise-host", "imds"]
    artifacts = one(dev, "Bucket", "storage-artifacts").outputs["bucket"]
    assert f"s3://{artifacts}/runtime/" in text


@pytest.mark.parametrize("template", ["scheduler-lt", "workers-lt"])
def test_agent_hosts_run_the_packaged_unit_as_their_own_user(dev: StackRun,
                                                              template: str) -> None:
    """Restarting an agent must leave its node's Dask processes running, and Dask must
    not run as root: both come from the packaged unit, so the stub must install it."""
    text = user_data(dev, template)
    unit = directives(packaged_unit())
    assert unit["KillMode"] == ["process"] and unit["Delegate"] == ["yes"]
    assert unit["User"] == ["dask-platform"]
    assert unit["EnvironmentFile"] == [AGENT_ENV_FILE]
    assert "useradd --system --user-group --shell /sbin/nologin dask-platform\n" in text
    assert f"chmod 0644 {AGENT_ENV_FILE}\n" in text
    assert re.search(rf"^install -m 0644 \"\$\(.+\)\" \\\n  /etc/systemd/system/{AGENT_UNIT}$",
                     text, re.MULTILINE)
    assert text.rstrip().endswith(f"systemctl enable --now {AGENT_UNIT}")
    assert "ExecStart=" not in text and "KillMode" not in text  # no unit of its own
    # The drop-in sends the agent's output to the file the CloudWatch agent ships.
    log = directives(heredoc(text, f"/etc/systemd/system/{AGENT_UNIT}.d/log.conf"))
    cloudwatch = json.loads(heredoc(text, "/opt/dask-platform/cloudwatch.json"))
    (collected,) = cloudwatch["logs"]["logs_collected"]["files"]["collect_list"]
    assert log["StandardOutput"] == [f"append:{collected['file_path']}"]
    group = one(dev, "LogGroup", f"monitoring-{TEMPLATES[template]}-logs").inputs["name"]
    assert collected["log_group_name"] == group


def test_the_stub_finds_the_unit_the_package_installed(dev: StackRun) -> None:
    """Run the stub's own lookup (with this interpreter in place of the host's venv)."""
    text = user_data(dev, "workers-lt")
    (lookup,) = re.findall(r'^install -m 0644 "\$\((\S+) (-c .+)\)" \\$', text, re.MULTILINE)
    assert lookup[0] == "/opt/dask-platform/venv/bin/python"
    found = subprocess.run(["bash", "-c", f"{shlex.quote(sys.executable)} {lookup[1]}"],
                           check=True, capture_output=True, text=True).stdout.strip()
    assert Path(found).name == AGENT_UNIT
    assert Path(found).read_text() == packaged_unit()


def test_the_gateway_keeps_its_own_unit_that_stops_its_proxy_with_it(dev: StackRun) -> None:
    text = user_data(dev, "gateway-lt")
    unit = directives(heredoc(text, "/etc/systemd/system/dask-platform.service"))
    assert unit.get("KillMode", ["control-group"]) == ["control-group"]
    assert unit["StandardOutput"] == ["append:/var/log/dask-platform.log"]
    assert AGENT_UNIT not in text and AGENT_ENV_FILE not in text
    assert "useradd" not in text


def test_the_agent_unit_ships_in_the_built_package(tmp_path: Path) -> None:
    """Build the archive the stack uploads the way pip does (setuptools' build_py, which
    fills the wheel); the unit is there only while pyproject lists it as package data."""
    for name, asset in runtime_package().assets.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(asset.path, tmp_path / name)
    subprocess.run([sys.executable, "-c", "from setuptools import setup; setup()", "-q",
                    "build_py", "--build-lib", "built"],
                   cwd=tmp_path, check=True, capture_output=True)
    built = tmp_path / "built" / "daskplatform" / "node" / AGENT_UNIT
    unit = directives(built.read_text())
    assert unit["KillMode"] == ["process"] and unit["Delegate"] == ["yes"]


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
        assert group["instanceRefresh"]["strategy"] == "Rolling"
        assert group["instanceRefresh"]["preferences"]["scaleInProtectedInstances"] == "Wait"


def alarm_and_policy(run: StackRun, alarm: str) -> tuple[dict, dict]:
    """The alarm's inputs and the inputs of the one scaling policy its action names."""
    inputs = one(run, "MetricAlarm", alarm).inputs
    (action,) = inputs["alarmActions"]
    (policy,) = [p for p in of_short_type(run, "Policy") if p.outputs["arn"] == action]
    return inputs, policy.inputs


@pytest.mark.parametrize(
    "run_name, out_cpu, in_cpu, cooldown",
    [
        ("dev", 70, 30, 300),
        (
            "custom",
            CUSTOM_WORKERS["scaleOutCpu"],
            CUSTOM_WORKERS["scaleInCpu"],
            CUSTOM_WORKERS["cooldownSeconds"],
        ),
    ],
)
def test_cpu_alarms_drive_the_right_scaling_policy(
    request: pytest.FixtureRequest, run_name: str, out_cpu: int, in_cpu: int, cooldown: int
) -> None:
    run: StackRun = request.getfixturevalue(run_name)
    asg = one(run, "Group", "workers-asg")
    high, scale_out = alarm_and_policy(run, "workers-cpu-high")
    low, scale_in = alarm_and_policy(run, "workers-cpu-low")
    assert (high["comparisonOperator"], high["threshold"]) == ("GreaterThanThreshold", out_cpu)
    assert (low["comparisonOperator"], low["threshold"]) == ("LessThanThreshold", in_cpu)
    for alarm in (high, low):
        assert (alarm["namespace"], alarm["metricName"]) == ("AWS/EC2", "CPUUtilization")
        assert alarm["dimensions"] == {"AutoScalingGroupName": asg.outputs["name"]}
    assert low["period"] * low["evaluationPeriods"] == cooldown
    for policy, step in ((scale_out, 1), (scale_in, -1)):
        assert policy["autoscalingGroupName"] == asg.outputs["name"]
        assert policy["policyType"] == "StepScaling"
        assert [s["scalingAdjustment"] for s in policy["stepAdjustments"]] == [step]
        assert policy["estimatedInstanceWarmup"] == cooldown


def test_pending_workers_metric_scales_out(dev: StackRun) -> None:
    alarm, policy = alarm_and_policy(dev, "workers-pending-workers")
    assert (alarm["namespace"], alarm["metricName"]) == ("DaskPlatform/dev", "PendingWorkers")
    # The gateway publishes it per group (daskplatform/gateway/metrics.py); an alarm
    # without the dimension would watch a metric nobody puts.
    assert alarm["dimensions"] == {"AutoScalingGroupName": "dask-platform-dev-workers"}
    assert (alarm["comparisonOperator"], alarm["threshold"]) == ("GreaterThanThreshold", 0)
    assert [s["scalingAdjustment"] for s in policy["stepAdjustments"]] == [1]
