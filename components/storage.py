"""Storage: EFS for homes and shared data, and the four buckets.

EFS is encrypted at rest, TLS-only by file-system policy, backed up, with one mount
target per private subnet and two access points: the shared data directory and the
root of the per-user homes (the runtime creates each user's home below it).

Buckets raw / processed / audit / artifacts all get SSE, versioning, a full public
access block, owner-enforced object ownership, a TLS-only policy and server access
logs to audit (audit itself is not logged into itself, which would loop). SSE is
AES256 (S3-managed) because ALB access logs, which also land in audit, support only
that; one scheme everywhere keeps the rules simple.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pulumi
import pulumi_aws as aws

from components.aws_context import AwsContext
from components.bootstrap import runtime_package
from daskplatform.runtime_version import archive_key
from daskplatform.settings import BUCKET_KINDS

ACCESS_LOG_PREFIX = "s3-access/"
ALB_LOG_PREFIX = "alb"
RAW_TO_GLACIER_DAYS = 90
RAW_EXPIRE_DAYS = 365
NONCURRENT_EXPIRE_DAYS = 90
SHARED_PATH = "/shared"
HOMES_PATH = "/home"


def _tls_only(bucket_arn: pulumi.Output[str]) -> dict:
    return {
        "Sid": "DenyInsecureTransport",
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:*",
        "Resource": [bucket_arn, pulumi.Output.concat(bucket_arn, "/*")],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }


def _log_delivery(
    audit_arn: pulumi.Output[str], context: AwsContext, elb_account_arn: pulumi.Output[str]
) -> list[dict]:
    """S3 server access logs and ALB access logs may write their prefixes of audit.

    ALB log delivery is granted to both the regional ELB account (regions before
    August 2022) and the log-delivery service principal (newer regions)."""
    alb_logs = pulumi.Output.concat(
        audit_arn, "/", ALB_LOG_PREFIX, "/AWSLogs/", context.account_id, "/*"
    )
    return [
        {
            "Sid": "S3ServerAccessLogs",
            "Effect": "Allow",
            "Principal": {"Service": "logging.s3.amazonaws.com"},
            "Action": "s3:PutObject",
            "Resource": pulumi.Output.concat(audit_arn, "/", ACCESS_LOG_PREFIX, "*"),
            "Condition": {"StringEquals": {"aws:SourceAccount": context.account_id}},
        },
        {
            "Sid": "AlbAccessLogsElbAccount",
            "Effect": "Allow",
            "Principal": {"AWS": elb_account_arn},
            "Action": "s3:PutObject",
            "Resource": alb_logs,
        },
        {
            "Sid": "AlbAccessLogsService",
            "Effect": "Allow",
            "Principal": {"Service": "logdelivery.elasticloadbalancing.amazonaws.com"},
            "Action": "s3:PutObject",
            "Resource": alb_logs,
        },
    ]


class Storage(pulumi.ComponentResource):
    """EFS and the buckets; also uploads the runtime package hosts install at boot."""

    buckets: dict[str, aws.s3.Bucket]
    file_system: aws.efs.FileSystem
    shared_access_point: aws.efs.AccessPoint
    homes_access_point: aws.efs.AccessPoint
    mount_targets: list[aws.efs.MountTarget]
    runtime_package: aws.s3.BucketObjectv2
    """Hosts install from it at boot: they wait for it (and for the mount targets)."""
    audit_policy: aws.s3.BucketPolicy
    """Lets the ALB deliver access logs; the ALB is created only after it."""

    def __init__(
        self,
        name: str,
        context: AwsContext,
        private_subnet_ids: Sequence[pulumi.Input[str]],
        efs_security_group_id: pulumi.Input[str],
        tags: Mapping[str, str],
        runtime_version: str,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("daskplatform:aws:Storage", name, None, opts)
        tags = dict(tags)
        self._file_system(name, private_subnet_ids, efs_security_group_id, tags)
        audit = self._bucket(name, "audit", None, tags)
        self.buckets = {
            kind: audit if kind == "audit" else self._bucket(name, kind, audit, tags)
            for kind in BUCKET_KINDS
        }
        child = pulumi.ResourceOptions(parent=self)
        elb_account = aws.elb.get_service_account_output(
            opts=pulumi.InvokeOutputOptions(parent=self)
        )
        for kind, bucket in self.buckets.items():
            statements = [_tls_only(bucket.arn)]
            if kind == "audit":
                statements += _log_delivery(bucket.arn, context, elb_account.arn)
            policy = aws.s3.BucketPolicy(
                f"{name}-{kind}-policy",
                bucket=bucket.id,
                opts=child,
                policy=pulumi.Output.json_dumps({"Version": "2012-10-17", "Statement": statements}),
            )
            if kind == "audit":
                self.audit_policy = policy
        aws.s3.BucketLifecycleConfiguration(
            f"{name}-raw-lifecycle",
            bucket=self.buckets["raw"].id,
            opts=child,
            rules=[
                {
                    "id": "glacier-then-expire",
                    "status": "Enabled",
                    "filter": {},
                    "transitions": [{"days": RAW_TO_GLACIER_DAYS, "storage_class": "GLACIER"}],
                    "expiration": {"days": RAW_EXPIRE_DAYS},
                    "noncurrent_version_expiration": {"noncurrent_days": NONCURRENT_EXPIRE_DAYS},
                }
            ],
        )
        self.runtime_package = aws.s3.BucketObjectv2(
            f"{name}-runtime-package",
            bucket=self.buckets["artifacts"].id,
            # A new key per version: hosts booted from older user data keep finding
            # theirs, and the key in user data says which version a host installs.
            key=archive_key(runtime_version),
            source=runtime_package(),
            content_type="application/zip",
            server_side_encryption="AES256",
            tags=tags,
            opts=child,
        )
        self.register_outputs(
            {
                **{f"{kind}_bucket": bucket.bucket for kind, bucket in self.buckets.items()},
                "efs_id": self.file_system.id,
            }
        )

    def _file_system(
        self,
        name: str,
        subnet_ids: Sequence[pulumi.Input[str]],
        security_group_id: pulumi.Input[str],
        tags: dict[str, str],
    ) -> None:
        child = pulumi.ResourceOptions(parent=self)
        self.file_system = aws.efs.FileSystem(
            f"{name}-efs",
            encrypted=True,
            performance_mode="generalPurpose",
            throughput_mode="elastic",
            lifecycle_policies=[{"transition_to_ia": "AFTER_30_DAYS"}],
            tags={**tags, "Name": f"{name}-efs"},
            opts=child,
        )
        fs = self.file_system
        aws.efs.BackupPolicy(
            f"{name}-efs-backup",
            file_system_id=fs.id,
            backup_policy={"status": "ENABLED"},
            opts=child,
        )
        aws.efs.FileSystemPolicy(
            f"{name}-efs-tls-only",
            file_system_id=fs.id,
            opts=child,
            policy=pulumi.Output.json_dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Sid": "DenyInsecureTransport",
                            "Effect": "Deny",
                            "Principal": {"AWS": "*"},
                            "Action": "*",
                            "Resource": fs.arn,
                            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                        }
                    ],
                }
            ),
        )
        self.mount_targets = [
            aws.efs.MountTarget(
                f"{name}-efs-mount-{index}",
                file_system_id=fs.id,
                subnet_id=subnet_id,
                security_groups=[security_group_id],
                opts=child,
            )
            for index, subnet_id in enumerate(subnet_ids)
        ]
        self.shared_access_point = aws.efs.AccessPoint(
            f"{name}-efs-shared",
            file_system_id=fs.id,
            tags=tags,
            opts=child,
            root_directory={
                "path": SHARED_PATH,
                "creation_info": {"owner_uid": 0, "owner_gid": 0, "permissions": "1777"},
            },
        )
        self.homes_access_point = aws.efs.AccessPoint(
            f"{name}-efs-homes",
            file_system_id=fs.id,
            tags=tags,
            opts=child,
            root_directory={
                "path": HOMES_PATH,
                "creation_info": {"owner_uid": 0, "owner_gid": 0, "permissions": "0755"},
            },
        )

    def _bucket(
        self, name: str, kind: str, audit: aws.s3.Bucket | None, tags: dict[str, str]
    ) -> aws.s3.Bucket:
        child = pulumi.ResourceOptions(parent=self)
        bucket = aws.s3.Bucket(f"{name}-{kind}", tags={**tags, "data": kind}, opts=child)
        aws.s3.BucketOwnershipControls(
            f"{name}-{kind}-ownership",
            bucket=bucket.id,
            opts=child,
            rule={"object_ownership": "BucketOwnerEnforced"},
        )
        aws.s3.BucketPublicAccessBlock(
            f"{name}-{kind}-public-access",
            bucket=bucket.id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=child,
        )
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-{kind}-sse",
            bucket=bucket.id,
            opts=child,
            rules=[
                {
                    "apply_server_side_encryption_by_default": {"sse_algorithm": "AES256"},
                    "bucket_key_enabled": True,
                }
            ],
        )
        aws.s3.BucketVersioning(
            f"{name}-{kind}-versioning",
            bucket=bucket.id,
            opts=child,
            versioning_configuration={"status": "Enabled"},
        )
        if audit is not None:
            aws.s3.BucketLogging(
                f"{name}-{kind}-access-logs",
                bucket=bucket.id,
                opts=child,
                target_bucket=audit.id,
                target_prefix=f"{ACCESS_LOG_PREFIX}{kind}/",
            )
        return bucket
