"""Data roles: one per platform group and one for the pipeline's service account,
assumable by the gateway's role alone, each reaching exactly the buckets and actions its
group's ``dataAccess`` grants (the pipeline: its own prefixes of the audit bucket)."""

from __future__ import annotations

import json

from daskplatform.settings import PLATFORM_GROUPS, RuntimeSettings

ROLES = (*PLATFORM_GROUPS, "pipeline")
from tests.cloud.conftest import one, quiet_run
from tools.mockrun import StackRun, stack_config

WRITE = {"s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"}


def bucket(run: StackRun, kind: str) -> str:
    return one(run, "Bucket", f"storage-{kind}").outputs["arn"]


def grants(run: StackRun, group: str) -> dict[str, set[str]]:
    """Resource -> the actions the group's role is allowed on it."""
    policy = json.loads(one(run, "RolePolicy", f"data-{group}-policy").inputs["policy"])
    found: dict[str, set[str]] = {}
    for statement in policy["Statement"]:
        if statement["Effect"] != "Allow":
            continue
        resources = statement["Resource"]
        for resource in [resources] if isinstance(resources, str) else resources:
            found.setdefault(resource, set()).update(statement["Action"])
    return found


def test_each_group_gets_exactly_its_buckets_and_actions(dev: StackRun) -> None:
    raw, processed = bucket(dev, "raw"), bucket(dev, "processed")
    read = {"s3:GetObject"}
    listing = {"s3:ListBucket", "s3:GetBucketLocation"}
    readwrite = {raw: listing, f"{raw}/*": read | WRITE,
                 processed: listing, f"{processed}/*": read | WRITE}
    assert grants(dev, "data_engineers") == readwrite
    assert grants(dev, "admins") == readwrite
    assert grants(dev, "data_analysts") == {processed: listing, f"{processed}/*": read}


def test_the_pipeline_reads_drops_writes_processed_and_only_its_audit_prefixes(
        dev: StackRun) -> None:
    raw, processed, audit = (bucket(dev, k) for k in ("raw", "processed", "audit"))
    listing = {"s3:ListBucket", "s3:GetBucketLocation"}
    assert grants(dev, "pipeline") == {
        raw: listing, f"{raw}/*": {"s3:GetObject"},
        processed: listing, f"{processed}/*": {"s3:GetObject"} | WRITE,
        audit: listing, **{key: {"s3:GetObject"} | WRITE for prefix in ("quarantine", "manifests")
                           for key in (f"{audit}/{prefix}", f"{audit}/{prefix}/*")}}
    policy = json.loads(one(dev, "RolePolicy", "data-pipeline-policy").inputs["policy"])
    (listing_audit,) = [s for s in policy["Statement"] if s["Resource"] == audit]
    assert listing_audit["Condition"] == {
        "StringLike": {"s3:prefix": ["quarantine*", "manifests*"]}}
    (deny,) = [s for s in policy["Statement"] if s["Effect"] == "Deny"]
    artifacts = bucket(dev, "artifacts")
    assert set(deny["Resource"]) == {artifacts, f"{artifacts}/*"}


def test_no_group_role_may_touch_the_platform_buckets(dev: StackRun) -> None:
    for group in PLATFORM_GROUPS:
        policy = json.loads(one(dev, "RolePolicy", f"data-{group}-policy").inputs["policy"])
        (deny,) = [s for s in policy["Statement"] if s["Effect"] == "Deny"]
        platform = {bucket(dev, "audit"), bucket(dev, "artifacts")}
        assert deny["Action"] == "s3:*"
        assert set(deny["Resource"]) == platform | {f"{arn}/*" for arn in platform}
        allowed = set(grants(dev, group))
        assert not {r for r in allowed if r.split("/")[0] in platform}


def test_only_the_gateway_role_assumes_them_and_only_these(dev: StackRun) -> None:
    gateway = one(dev, "Role", "identity-gateway").outputs["arn"]
    arns = []
    for group in ROLES:
        role = one(dev, "Role", f"data-{group}")
        assert role.inputs["name"] == f"dask-platform-dev-data-{group.replace('_', '-')}"
        assert role.inputs["maxSessionDuration"] == 3600
        trust = json.loads(role.inputs["assumeRolePolicy"])
        assert trust["Statement"] == [{"Effect": "Allow", "Principal": {"AWS": gateway},
                                       "Action": ["sts:AssumeRole"]}]
        assert role.inputs["tags"]["stack"] == "dev"
        arns.append(role.outputs["arn"])
    assume = one(dev, "RolePolicy", "data-gateway-assume")
    assert assume.inputs["role"] == one(dev, "Role", "identity-gateway").id
    (statement,) = json.loads(assume.inputs["policy"])["Statement"]
    assert statement["Action"] == ["sts:AssumeRole"]
    assert statement["Resource"] == sorted(arns)
    for role in ("scheduler", "worker"):
        policy = one(dev, "RolePolicy", f"identity-{role}-policy").inputs["policy"]
        assert "sts:AssumeRole" not in policy


def test_settings_change_a_groups_access() -> None:
    config = stack_config("dev")
    config["dask-platform:dataAccess"] = {"groups": {
        "admins": {"raw": "read", "processed": "readwrite"},
        "data_engineers": {"raw": "read", "processed": "read"},
        "data_analysts": {"raw": "none", "processed": "none"}}}
    run = quiet_run(config, stack="access")
    raw, processed = bucket(run, "raw"), bucket(run, "processed")
    assert grants(run, "data_engineers") == {
        raw: {"s3:ListBucket", "s3:GetBucketLocation"}, f"{raw}/*": {"s3:GetObject"},
        processed: {"s3:ListBucket", "s3:GetBucketLocation"},
        f"{processed}/*": {"s3:GetObject"}}
    assert grants(run, "data_analysts") == {}
    assert WRITE <= grants(run, "admins")[f"{processed}/*"]


def test_the_runtime_settings_name_the_roles(dev: StackRun) -> None:
    published = RuntimeSettings.from_json(
        one(dev, "Parameter", "gateway-settings").inputs["value"])
    assert published.data_roles == {
        group: one(dev, "Role", f"data-{group}").inputs["name"] for group in ROLES}
    assert published.data_access.session_minutes == 60
