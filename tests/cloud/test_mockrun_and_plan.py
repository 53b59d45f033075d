"""The mock runner is strict and isolated; the offline plan shows what a reviewer checks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.cloud.conftest import of_short_type, quiet_run
from tools import plan
from tools.mockrun import PROJECT_ROOT, StackRun, UnknownInvokeError, stack_config

COMMON_TAGS = {
    "project": "dask-platform",
    "managed-by": "pulumi",
    "team": "data-platform",
    "cost-center": "analytics",
}


def test_an_invoke_the_mocks_do_not_know_fails_the_run(tmp_path: Path) -> None:
    program = tmp_path / "program.py"
    program.write_text(
        "import pulumi_aws as aws\naws.ec2.get_ami_output(most_recent=True, owners=['amazon'])\n"
    )
    with pytest.raises(UnknownInvokeError, match="aws:ec2/getAmi:getAmi"):
        quiet_run(stack_config("dev"), program=program)


def test_runs_do_not_leak_into_each_other(dev: StackRun, custom: StackRun) -> None:
    """``custom`` ran after ``dev`` in the same process: it has its own stack and config."""
    assert {r.urn.split("::")[0] for r in custom.resources} == {"urn:pulumi:custom"}
    assert not of_short_type(custom, "Vpc") and len(of_short_type(dev, "Vpc")) == 1


def test_every_resource_sits_in_a_component_and_taggable_ones_carry_the_common_tags(
    dev: StackRun,
) -> None:
    components = {r.urn: r for r in dev.resources if not r.custom}
    assert {c.type for c in components.values()} == {
        f"daskplatform:aws:{name}"
        for name in (
            "Network",
            "SecurityGroups",
            "Storage",
            "Identity",
            "DataRoles",
            "SchedulerHost",
            "WorkerPool",
            "GatewayHost",
            "LoadBalancer",
            "Monitoring",
            "DropQueue",
        )
    }
    for resource in dev.resources:
        if resource.custom:
            assert resource.parent_urn in components, resource.name
            assert resource.name.startswith(components[resource.parent_urn].name + "-"), (
                resource.name
            )
        tags = resource.inputs.get("tags")
        if isinstance(tags, dict):
            assert COMMON_TAGS.items() <= tags.items() and tags["stack"] == "dev", resource.name
    for key_type in (
        "Vpc",
        "Subnet",
        "SecurityGroup",
        "Bucket",
        "LaunchTemplate",
        "Instance",
        "FileSystem",
        "LoadBalancer",
        "TargetGroup",
        "Role",
        "Secret",
        "Topic",
        "MetricAlarm",
        "LogGroup",
        "Parameter",
    ):
        assert all("tags" in r.inputs for r in of_short_type(dev, key_type)), key_type


def test_plan_prints_resources_by_component_with_key_properties(
    dev: StackRun, capsys: pytest.CaptureFixture[str]
) -> None:
    assert plan.main(["--stack", "dev"]) == 0
    text = capsys.readouterr().out
    custom_count = sum(1 for r in dev.resources if r.custom)
    components = {r.type for r in dev.resources if r.type.startswith("daskplatform:aws:")}
    assert len(components) == 11  # every ComponentResource in components/, declared once
    assert f"{custom_count} resources in {len(components)} components" in text
    for header in (
        "Network 'network'",
        "SecurityGroups 'security'",
        "WorkerPool 'workers'",
        "LoadBalancer 'alb'",
        "Monitoring 'monitoring'",
    ):
        assert header in text
    for detail in (
        "minSize=5 maxSize=20",
        "httpTokens=required",
        "sslPolicy=ELBSecurityPolicy-TLS13-1-2-2021-06",
        (
            "securityGroupId=security-gateway fromPort=8000 toPort=8000 "
            "referencedSecurityGroupId=security-alb"
        ),
        "threshold=70 alarmActions=[workers-scale-out-cpu]",
        "encrypted=True",
    ):
        assert detail in text


def test_plan_reports_bad_settings_and_unknown_stacks(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert plan.main(["nosuchstack"]) == 2
    assert "Pulumi.dev.yaml" in capsys.readouterr().err
    bad = {**stack_config("dev"), "dask-platform:workers": {"min": 30, "max": 20}}
    monkeypatch.setattr(plan, "stack_config", lambda stack: bad)
    assert plan.main([]) == 2
    assert (
        "dask-platform:workers.min (30) must be <= dask-platform:workers.max (20)"
        in capsys.readouterr().err
    )


def test_plan_command_runs_as_documented() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tools.plan", "--stack", "dev"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Offline plan of stack 'dev'")
