"""Identity: least-privilege roles, the LDAP secret, and the published runtime settings."""

from __future__ import annotations

import json

from daskplatform.settings import RuntimeSettings
from tests.cloud.conftest import LDAP_PASSWORD, of_short_type, one
from tools.mockrun import StackRun

ROLES = ("gateway", "scheduler", "worker")


def statements(run: StackRun, role: str) -> dict[str, dict]:
    policy = json.loads(one(run, "RolePolicy", f"identity-{role}-policy").inputs["policy"])
    return {s["Sid"]: s for s in policy["Statement"]}


def all_actions(run: StackRun, role: str) -> set[str]:
    found = set()
    for statement in statements(run, role).values():
        actions = statement["Action"]
        found.update([actions] if isinstance(actions, str) else actions)
    return found


def secret_grants(run: StackRun, role: str) -> set[tuple[tuple[str, ...], str]]:
    """(sorted Secrets Manager actions, resource) of each statement granting any."""
    found = set()
    for statement in statements(run, role).values():
        actions = statement["Action"]
        actions = [actions] if isinstance(actions, str) else actions
        if any(a.startswith("secretsmanager:") for a in actions):
            found.add((tuple(sorted(actions)), statement["Resource"]))
    return found


def test_each_role_reaches_only_its_secrets_with_only_the_actions_it_needs(
    dev: StackRun,
) -> None:
    ldap = one(dev, "Secret", "identity-ldap-bind-password").outputs["arn"]
    token = one(dev, "Secret", "identity-agent-token").outputs["arn"]
    pipeline = one(dev, "Secret", "identity-pipeline-password").outputs["arn"]
    assert len({ldap, token, pipeline}) == 3
    assert secret_grants(dev, "gateway") == {
        (("secretsmanager:GetSecretValue",), ldap),
        (("secretsmanager:GetSecretValue", "secretsmanager:PutSecretValue"), token),
        (("secretsmanager:GetSecretValue",), pipeline),  # the pipeline watcher's login
    }
    for role in ("scheduler", "worker"):
        assert secret_grants(dev, role) == {(("secretsmanager:GetSecretValue",), token)}


def test_the_agent_token_secret_is_named_and_created_empty(
    dev: StackRun, custom: StackRun
) -> None:
    for run, stack in ((dev, "dev"), (custom, "custom")):
        secret = one(run, "Secret", "identity-agent-token")
        assert secret.inputs["name"] == f"dask-platform/{stack}/agent-token"
        versions = of_short_type(run, "SecretVersion")
        assert secret.id not in {v.inputs["secretId"] for v in versions}


def test_the_gateway_may_find_the_scheduler_host_by_its_tags(dev: StackRun) -> None:
    assert "ec2:DescribeInstances" in statements(dev, "gateway")["DiscoverNodes"]["Action"]
    for role in ("scheduler", "worker"):
        assert "ec2:DescribeInstances" not in all_actions(dev, role)


def test_gateway_protects_only_the_worker_group(dev: StackRun) -> None:
    protect = statements(dev, "gateway")["ProtectBusyWorkers"]
    assert protect["Action"] == "autoscaling:SetInstanceProtection"
    asg_name = one(dev, "Group", "workers-asg").inputs["name"]
    assert protect["Resource"].endswith(f":autoScalingGroupName/{asg_name}")
    for role in ("scheduler", "worker"):
        assert "autoscaling:SetInstanceProtection" not in all_actions(dev, role)
        assert "elasticfilesystem:ClientRootAccess" not in all_actions(dev, role)


def test_every_host_reads_its_settings_and_package_and_nothing_wider(dev: StackRun) -> None:
    artifacts = one(dev, "Bucket", "storage-artifacts").outputs["arn"]
    efs = one(dev, "FileSystem", "storage-efs").outputs["arn"]
    for role in ROLES:
        granted = statements(dev, role)
        assert granted["ReadRuntimeSettings"]["Resource"].endswith(
            ":parameter/dask-platform/dev/runtime-settings"
        )
        assert granted["FetchRuntimePackage"]["Resource"] == f"{artifacts}/runtime/*"
        assert granted["MountEfs"]["Resource"] == efs
        assert granted["PutPlatformMetrics"]["Condition"] == {
            "StringEquals": {"cloudwatch:namespace": "DaskPlatform/dev"}
        }
        for statement in granted.values():
            actions = statement["Action"]
            assert "*" not in actions and not any(a.endswith(":*") for a in actions), (
                role,
                statement,
            )
            if statement["Resource"] == "*":
                assert statement["Sid"] in ("PutPlatformMetrics", "DiscoverNodes"), (
                    role,
                    statement,
                )


def test_one_role_and_profile_per_host_role_each_with_session_manager(dev: StackRun) -> None:
    for role in ROLES:
        iam_role = one(dev, "Role", f"identity-{role}")
        trust = json.loads(iam_role.inputs["assumeRolePolicy"])["Statement"][0]
        assert trust["Principal"] == {"Service": "ec2.amazonaws.com"}
        assert (
            one(dev, "InstanceProfile", f"identity-{role}-profile").inputs["role"]
            == iam_role.outputs["name"]
        )
        attachment = one(dev, "RolePolicyAttachment", f"identity-{role}-ssm-core").inputs
        assert attachment["policyArn"] == "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"


def test_secret_value_only_when_a_password_is_set_and_only_as_a_secret(
    dev: StackRun, custom: StackRun
) -> None:
    assert not of_short_type(dev, "SecretVersion")
    (version,) = of_short_type(custom, "SecretVersion")
    assert version.inputs["secretString"] == LDAP_PASSWORD
    assert version.secret_inputs == {"secretString"}
    for resource in custom.resources:
        if resource is not version:
            assert LDAP_PASSWORD not in json.dumps(resource.inputs, default=str), resource.name


def test_runtime_settings_parameter_names_the_secret_not_the_password(custom: StackRun) -> None:
    parameter = one(custom, "Parameter", "gateway-settings").inputs
    assert parameter["name"] == "/dask-platform/custom/runtime-settings"
    runtime = RuntimeSettings.from_json(parameter["value"])
    secret = one(custom, "Secret", "identity-ldap-bind-password")
    assert runtime.ldap_bind_password_secret_id == secret.inputs["name"]
    assert secret.inputs["name"] == "dask-platform/custom/ldap-bind-password"
    assert runtime.metrics_namespace == "DaskPlatform/custom"
    assert runtime.stack_name == "custom"
    assert runtime.worker_asg_name == one(custom, "Group", "workers-asg").inputs["name"]
    assert runtime.agent_token_secret_id == (
        one(custom, "Secret", "identity-agent-token").inputs["name"]
    )
    assert runtime.workers.max == 7 and runtime.ldap_url == "ldap://ipa.example.internal"
    assert LDAP_PASSWORD not in parameter["value"]


def s3_grants(run: StackRun, role: str) -> set[tuple[str, str]]:
    """(S3 action, resource) pairs the role is granted."""
    found = set()
    for statement in statements(run, role).values():
        actions = statement["Action"]
        resources = statement["Resource"]
        for action in [actions] if isinstance(actions, str) else actions:
            if action.startswith("s3:"):
                found.update((action, r) for r in ([resources] if isinstance(resources, str)
                                                   else resources))
    return found


def test_no_host_role_reaches_a_data_bucket(dev: StackRun) -> None:
    """User code, the pipeline included, works with vended data-role credentials only:
    workers and the scheduler host read the runtime archive and nothing else."""
    artifacts = one(dev, "Bucket", "storage-artifacts").outputs["arn"]
    for role in ("scheduler", "worker"):
        assert s3_grants(dev, role) == {("s3:GetObject", f"{artifacts}/runtime/*")}


def test_the_gateway_writes_usage_reports_and_archived_homes_and_alerts_one_topic(
        dev: StackRun) -> None:
    """Daily usage reports (usage/daily/...) and offboarded homes (home-archives/...) in the
    audit bucket and nowhere else; budget alerts to the stack's own topic."""
    arn = {kind: one(dev, "Bucket", f"storage-{kind}").outputs["arn"]
           for kind in ("audit", "artifacts")}
    assert s3_grants(dev, "gateway") == {
        ("s3:GetObject", f"{arn['artifacts']}/runtime/*"),
        *((action, f"{arn['audit']}/{prefix}/*") for action in ("s3:GetObject", "s3:PutObject")
          for prefix in ("usage", "home-archives"))}
    publish = statements(dev, "gateway")["PublishBudgetAlerts"]
    assert publish["Action"] == "sns:Publish"
    assert publish["Resource"] == one(dev, "Topic", "monitoring-alerts").outputs["arn"]
    assert not any(a.startswith("sns:") for role in ("scheduler", "worker")
                   for a in all_actions(dev, role))


def test_a_worker_completes_only_its_own_groups_launch_hook(dev: StackRun) -> None:
    grant = statements(dev, "worker")["CompleteOwnLaunch"]
    assert grant["Action"] == "autoscaling:CompleteLifecycleAction"
    assert grant["Resource"].endswith(":autoScalingGroupName/dask-platform-dev-workers")
    assert "autoscaling:CompleteLifecycleAction" not in all_actions(dev, "scheduler")
