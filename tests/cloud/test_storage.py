"""Storage: encryption, versioning, no public access, access logs, raw lifecycle, EFS."""

from __future__ import annotations

import json

from daskplatform.runtime_version import source_version
from tests.cloud.conftest import of_short_type, one
from tools.mockrun import StackRun

BUCKETS = ("raw", "processed", "audit", "artifacts")


def per_bucket(run: StackRun, type_: str) -> dict[str, dict]:
    """Inputs of each bucket's ``type_`` resource, by bucket kind."""
    names = {r.id: r.name.removeprefix("storage-") for r in of_short_type(run, "Bucket")}
    return {names[r.inputs["bucket"]]: r.inputs for r in of_short_type(run, type_)}


def test_every_bucket_is_encrypted_versioned_and_private(dev: StackRun) -> None:
    sse = per_bucket(dev, "BucketServerSideEncryptionConfiguration")
    versioning = per_bucket(dev, "BucketVersioning")
    public = per_bucket(dev, "BucketPublicAccessBlock")
    ownership = per_bucket(dev, "BucketOwnershipControls")
    for kind in BUCKETS:
        rule = sse[kind]["rules"][0]["applyServerSideEncryptionByDefault"]
        assert rule["sseAlgorithm"] in ("AES256", "aws:kms"), kind
        assert versioning[kind]["versioningConfiguration"]["status"] == "Enabled", kind
        assert all(
            public[kind][flag] is True
            for flag in (
                "blockPublicAcls",
                "blockPublicPolicy",
                "ignorePublicAcls",
                "restrictPublicBuckets",
            )
        ), kind
        assert ownership[kind]["rule"]["objectOwnership"] == "BucketOwnerEnforced", kind


def test_every_bucket_denies_plain_http(dev: StackRun) -> None:
    policies = per_bucket(dev, "BucketPolicy")
    assert set(policies) == set(BUCKETS)
    for kind, inputs in policies.items():
        statements = json.loads(inputs["policy"])["Statement"]
        assert any(
            s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
            for s in statements
        ), kind


def test_access_logs_of_the_other_buckets_go_to_audit(dev: StackRun) -> None:
    audit = one(dev, "Bucket", "storage-audit").id
    logging = per_bucket(dev, "BucketLogging")
    assert set(logging) == {"raw", "processed", "artifacts"}
    for kind, inputs in logging.items():
        assert inputs["targetBucket"] == audit and inputs["targetPrefix"] == f"s3-access/{kind}/"
    audit_policy = json.loads(per_bucket(dev, "BucketPolicy")["audit"]["policy"])["Statement"]
    writers = {s["Principal"].get("Service") for s in audit_policy if s["Effect"] == "Allow"}
    assert {"logging.s3.amazonaws.com", "logdelivery.elasticloadbalancing.amazonaws.com"} <= writers


def test_raw_moves_to_glacier_at_90_days_and_expires_at_365(dev: StackRun) -> None:
    lifecycle = per_bucket(dev, "BucketLifecycleConfiguration")
    assert set(lifecycle) == {"raw"}
    rule = lifecycle["raw"]["rules"][0]
    assert rule["status"] == "Enabled"
    assert rule["transitions"] == [{"days": 90, "storageClass": "GLACIER"}]
    assert rule["expiration"]["days"] == 365


def test_efs_is_encrypted_backed_up_tls_only_with_a_mount_target_per_private_subnet(
    dev: StackRun,
) -> None:
    efs = one(dev, "FileSystem", "storage-efs")
    assert efs.inputs["encrypted"] is True
    assert (
        one(dev, "BackupPolicy", "storage-efs-backup").inputs["backupPolicy"]["status"] == "ENABLED"
    )
    policy = json.loads(one(dev, "FileSystemPolicy", "storage-efs-tls-only").inputs["policy"])
    assert policy["Statement"][0]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    private = sorted(
        s.id for s in of_short_type(dev, "Subnet") if s.inputs["tags"]["tier"] == "private"
    )
    mounts = of_short_type(dev, "MountTarget")
    assert sorted(m.inputs["subnetId"] for m in mounts) == private
    assert {m.inputs["fileSystemId"] for m in mounts} == {efs.id}
    paths = {a.inputs["rootDirectory"]["path"] for a in of_short_type(dev, "AccessPoint")}
    assert paths == {"/shared", "/home"}


def test_the_runtime_package_is_uploaded_to_the_artifacts_bucket(dev: StackRun) -> None:
    package = one(dev, "BucketObjectv2", "storage-runtime-package").inputs
    assert package["bucket"] == one(dev, "Bucket", "storage-artifacts").id
    # The key carries the archive's content hash: new code, new key (and new user data).
    assert package["key"] == f"runtime/dask-platform-{source_version()}.zip"
