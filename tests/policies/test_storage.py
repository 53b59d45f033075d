"""S3 stack rules: a bucket and its separate config resources, linked by reference."""

from __future__ import annotations

from policies.model import StackResource
from policies.storage import (
    ENCRYPTION_TYPES,
    LIFECYCLE_TYPES,
    PUBLIC_ACCESS_BLOCK,
    VERSIONING_TYPES,
)
from tests.policies.support import run_stack

BUCKET = "aws:s3/bucket:Bucket"


def bucket(name: str, **props: object) -> StackResource:
    return StackResource(BUCKET, name, props, identifiers=frozenset({f"{name}_id"}))


def config(kind: str, name: str, of: str, **props: object) -> StackResource:
    return StackResource(kind, name, {"bucket": f"{of}_id", **props})


def sse(of: str, algorithm: str = "AES256") -> StackResource:
    return config(ENCRYPTION_TYPES[0], f"{of}-sse", of, rules=[
        {"applyServerSideEncryptionByDefault": {"sseAlgorithm": algorithm}}])


def test_bucket_with_encryption_config_passes() -> None:
    assert run_stack("s3-bucket-encryption", [bucket("raw"), sse("raw")]) == []


def test_encryption_config_of_another_bucket_does_not_count() -> None:
    assert run_stack("s3-bucket-encryption", [bucket("raw"), bucket("audit"), sse("audit")]) == [
        ("raw", ("bucket has no server-side encryption; add an s3.BucketServerSideEncryption"
                "Configuration for it with sseAlgorithm one of AES256, aws:kms, aws:kms:dsse"))]


def test_encryption_linked_by_dependency_in_preview() -> None:
    """In preview the bucket id is unknown; the engine's property dependencies link them."""
    linked = StackResource(ENCRYPTION_TYPES[1], "raw-sse", {"rules": [
        {"applyServerSideEncryptionByDefault": {"sseAlgorithm": "aws:kms"}}]},
        property_dependencies={"bucket": frozenset({"raw"})})
    assert run_stack("s3-bucket-encryption", [bucket("raw"), linked]) == []


def test_inline_encryption_counts_and_bad_algorithm_fails() -> None:
    inline = bucket("raw", serverSideEncryptionConfiguration={
        "rule": {"applyServerSideEncryptionByDefault": {"sseAlgorithm": "AES256"}}})
    assert run_stack("s3-bucket-encryption", [inline]) == []
    assert len(run_stack("s3-bucket-encryption", [bucket("raw"), sse("raw", "none")])) == 1


FLAGS = {"blockPublicAcls": True, "blockPublicPolicy": True, "ignorePublicAcls": True,
             "restrictPublicBuckets": True}


def test_public_access_block() -> None:
    good = config(PUBLIC_ACCESS_BLOCK, "raw-pab", "raw", **FLAGS)
    assert run_stack("s3-public-access-blocked", [bucket("raw"), good]) == []
    leaky = config(PUBLIC_ACCESS_BLOCK, "raw-pab", "raw", **{**FLAGS, "blockPublicPolicy": False,
                                                             "ignorePublicAcls": False})
    assert run_stack("s3-public-access-blocked", [bucket("raw"), leaky]) == [
        ("raw-pab", ("public access block leaves blockPublicPolicy, ignorePublicAcls off; "
                    "set all four flags to True"))]
    assert run_stack("s3-public-access-blocked", [bucket("raw")]) == [
        ("raw", ("bucket has no public access block; add an s3.BucketPublicAccessBlock for it "
                "with blockPublicAcls, blockPublicPolicy, ignorePublicAcls, "
                "restrictPublicBuckets all True"))]


def test_versioning() -> None:
    enabled = config(VERSIONING_TYPES[0], "raw-v", "raw",
                     versioningConfiguration={"status": "Enabled"})
    suspended = config(VERSIONING_TYPES[0], "raw-v", "raw",
                       versioningConfiguration={"status": "Suspended"})
    assert run_stack("s3-versioning", [bucket("raw"), enabled]) == []
    assert run_stack("s3-versioning", [bucket("raw", versioning={"enabled": True})]) == []
    assert run_stack("s3-versioning", [bucket("raw"), suspended]) == [
        ("raw", ("bucket versioning is not enabled; add an s3.BucketVersioning for it with "
                "versioningConfiguration.status='Enabled'"))]


def lifecycle(glacier_days: float | None, expire_days: float | None,
              status: str = "Enabled") -> StackResource:
    rule: dict = {"id": "age", "status": status, "filter": {}}
    if glacier_days is not None:
        rule["transitions"] = [{"days": glacier_days, "storageClass": "GLACIER"}]
    if expire_days is not None:
        rule["expiration"] = {"days": expire_days}
    return config(LIFECYCLE_TYPES[0], "platform-raw-lifecycle", "platform-raw", rules=[rule])


def test_raw_lifecycle_passes_at_limits() -> None:
    assert run_stack("s3-raw-lifecycle", [bucket("platform-raw"), lifecycle(90.0, 365.0)]) == []


def test_raw_lifecycle_too_late_fails() -> None:
    assert run_stack("s3-raw-lifecycle", [bucket("platform-raw"), lifecycle(120.0, 400.0)]) == [
        ("platform-raw", ("raw bucket moves objects to Glacier after 120 days (limit 90 days); "
                         "add an enabled s3.BucketLifecycleConfiguration rule with a transition "
                         "to GLACIER at <= 90 days")),
        ("platform-raw", ("raw bucket expires objects after 400 days (limit 365 days); add an "
                         "enabled lifecycle rule with expiration.days <= 365"))]


def test_raw_lifecycle_missing_or_disabled_fails() -> None:
    for resources in ([bucket("platform-raw")],
                      [bucket("platform-raw"), lifecycle(30.0, 60.0, status="Disabled")]):
        messages = [m for _, m in run_stack("s3-raw-lifecycle", resources)]
        assert [m.split(" (")[0] for m in messages] == [
            "raw bucket never moves objects to Glacier", "raw bucket never expires objects"]


def test_lifecycle_rule_only_applies_to_raw_bucket() -> None:
    assert run_stack("s3-raw-lifecycle", [bucket("platform-processed"),
                                          bucket("drawings")]) == []
    assert run_stack("s3-raw-lifecycle", [bucket("data")],
                     config={"rawBucketPattern": "^data$"}) != []
