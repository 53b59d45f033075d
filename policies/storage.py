"""S3: every bucket encrypted, versioned and closed to the public; the raw bucket
ages out (Glacier, then expiry). These relate a bucket to the separate config
resources pulumi-aws 7 uses, so they are stack rules; inline settings on the bucket
(deprecated but still accepted) count too. Those inline settings are computed by the
provider, so unknown in a preview: they are read with ``known`` and never block."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from policies.model import (
    ConfigOption,
    StackResource,
    as_int,
    is_true,
    items,
    known,
    of_types,
    refers_to,
)

BUCKET_TYPES = ("aws:s3/bucket:Bucket", "aws:s3/bucketV2:BucketV2")
ENCRYPTION_TYPES = (
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
    "aws:s3/bucketServerSideEncryptionConfigurationV2:BucketServerSideEncryptionConfigurationV2",
)
VERSIONING_TYPES = ("aws:s3/bucketVersioning:BucketVersioning",
                    "aws:s3/bucketVersioningV2:BucketVersioningV2")
PUBLIC_ACCESS_BLOCK = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
LIFECYCLE_TYPES = ("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration",
                   "aws:s3/bucketLifecycleConfigurationV2:BucketLifecycleConfigurationV2")

SSE_ALGORITHMS = ("AES256", "aws:kms", "aws:kms:dsse")
PUBLIC_ACCESS_FLAGS = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls",
                       "restrictPublicBuckets")
GLACIER_CLASSES = ("GLACIER", "DEEP_ARCHIVE", "GLACIER_IR")

LIFECYCLE_OPTIONS = {
    "rawBucketPattern": ConfigOption(
        r"(^|[^a-z0-9])raw([^a-z0-9]|$)", "string",
        "Regex (case-insensitive) on a bucket's logical name, bucket or bucketPrefix that "
        "marks the raw-data bucket."),
    "glacierAfterDays": ConfigOption(90, "integer",
                                     "Raw objects must move to Glacier by this age (days)."),
    "expireAfterDays": ConfigOption(365, "integer",
                                    "Raw objects must expire by this age (days)."),
}


def _configs(bucket: StackResource, resources: Sequence[StackResource],
             types: Sequence[str]) -> list[StackResource]:
    return [r for r in of_types(resources, types) if refers_to(r, "bucket", bucket)]


def _sse_rules(props: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Encryption rules of a config resource (``rules``) or inline block (``rule``)."""
    return items(props.get("rules")) + items(props.get("rule"))


def _encrypts(props: Mapping[str, Any]) -> bool:
    return any(
        (rule.get("applyServerSideEncryptionByDefault") or {}).get("sseAlgorithm")
        in SSE_ALGORITHMS
        for rule in _sse_rules(props)
    )


def check_bucket_encryption(resources: Sequence[StackResource],
                            config: Mapping[str, Any]) -> list[tuple[str, str]]:
    violations = []
    for bucket in of_types(resources, BUCKET_TYPES):
        inline = known(bucket.props, "serverSideEncryptionConfiguration")
        if (inline and _encrypts(inline)) or any(
                _encrypts(c.props) for c in _configs(bucket, resources, ENCRYPTION_TYPES)):
            continue
        violations.append((bucket.name, (
            "bucket has no server-side encryption; add an s3.BucketServerSideEncryption"
            f"Configuration for it with sseAlgorithm one of {', '.join(SSE_ALGORITHMS)}")))
    return violations


def check_bucket_public_access(resources: Sequence[StackResource],
                               config: Mapping[str, Any]) -> list[tuple[str, str]]:
    violations = []
    for block in of_types(resources, (PUBLIC_ACCESS_BLOCK,)):
        off = [flag for flag in PUBLIC_ACCESS_FLAGS if not is_true(block.props.get(flag))]
        if off:
            violations.append((block.name, (f"public access block leaves {', '.join(off)} off; "
                                           "set all four flags to True")))
    for bucket in of_types(resources, BUCKET_TYPES):
        if not _configs(bucket, resources, (PUBLIC_ACCESS_BLOCK,)):
            violations.append((bucket.name, (
                "bucket has no public access block; add an s3.BucketPublicAccessBlock for it "
                f"with {', '.join(PUBLIC_ACCESS_FLAGS)} all True")))
    return violations


def _versioned(bucket: StackResource, resources: Sequence[StackResource]) -> bool:
    inline = known(bucket.props, "versioning") or {}
    if is_true(inline.get("enabled")):
        return True
    return any((c.props.get("versioningConfiguration") or {}).get("status") == "Enabled"
               for c in _configs(bucket, resources, VERSIONING_TYPES))


def check_bucket_versioning(resources: Sequence[StackResource],
                            config: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [
        (bucket.name, ("bucket versioning is not enabled; add an s3.BucketVersioning for it "
                      "with versioningConfiguration.status='Enabled'"))
        for bucket in of_types(resources, BUCKET_TYPES) if not _versioned(bucket, resources)
    ]


def _lifecycle_rules(bucket: StackResource,
                     resources: Sequence[StackResource]) -> list[Mapping[str, Any]]:
    """Enabled rules, from config resources or the bucket's inline ``lifecycleRules``."""
    rules = [rule for config in _configs(bucket, resources, LIFECYCLE_TYPES)
             for rule in items(config.props.get("rules")) if rule.get("status") == "Enabled"]
    rules += [rule for rule in items(known(bucket.props, "lifecycleRules"))
              if is_true(rule.get("enabled"))]
    return rules


def _ages(rules: list[Mapping[str, Any]]) -> tuple[int | None, int | None]:
    """The earliest Glacier transition and the earliest expiry, in days."""
    to_glacier = [as_int(t.get("days"), -1) for rule in rules
                  for t in items(rule.get("transitions")) + items(rule.get("transition"))
                  if t.get("storageClass") in GLACIER_CLASSES and t.get("days") is not None]
    expiry = [as_int(e.get("days"), -1) for rule in rules for e in items(rule.get("expiration"))
              if e.get("days") is not None]
    return min(to_glacier, default=None), min(expiry, default=None)


def _after(action: str, days: int | None) -> str:
    """'moves objects to Glacier after 120 days', or 'never moves objects to Glacier'."""
    return f"never {action}" if days is None else f"{action} after {days} days"


def is_raw_bucket(bucket: StackResource, pattern: str) -> bool:
    marker = re.compile(pattern, re.IGNORECASE)
    texts = (bucket.name, known(bucket.props, "bucket"), known(bucket.props, "bucketPrefix"))
    return any(isinstance(t, str) and marker.search(t) for t in texts)


def check_raw_lifecycle(resources: Sequence[StackResource],
                        config: Mapping[str, Any]) -> list[tuple[str, str]]:
    glacier_by, expire_by = int(config["glacierAfterDays"]), int(config["expireAfterDays"])
    violations = []
    for bucket in of_types(resources, BUCKET_TYPES):
        if not is_raw_bucket(bucket, config["rawBucketPattern"]):
            continue
        to_glacier, expiry = _ages(_lifecycle_rules(bucket, resources))
        if to_glacier is None or to_glacier > glacier_by:
            violations.append((bucket.name, (
                f"raw bucket {_after('moves objects to Glacier', to_glacier)} (limit "
                f"{glacier_by} days); add an enabled s3.BucketLifecycleConfiguration rule with a "
                f"transition to GLACIER at <= {glacier_by} days")))
        if expiry is None or expiry > expire_by:
            violations.append((bucket.name, (
                f"raw bucket {_after('expires objects', expiry)} (limit {expire_by} days); add an "
                f"enabled lifecycle rule with expiration.days <= {expire_by}")))
    return violations
