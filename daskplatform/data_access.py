"""The IAM documents of the per-group data roles, from the ``dataAccess`` settings, and
of the pipeline's role (the AppsFlyer pipeline's service account, ``pipeline.serviceUser``).

One function for every place a data role exists: the stack declares the roles with
these documents (``components/data_roles.py``), and local mode and the rehearsal create
the same roles in moto (``daskplatform/aws_standin.py``), so the refusal a user sees
there is the policy AWS would apply.

Least privilege, bucket by bucket: ``read`` lists the bucket and gets its objects,
``readwrite`` also puts and deletes them; nothing else, and an explicit deny on the
platform's own buckets (audit and artifacts), so that no later statement can open them.
No KMS statement: the buckets use S3-managed keys (SSE-S3, ``components/storage.py``).

The pipeline writes the audit bucket through the platform only: its own role reads raw
drops, reads and writes processed data, and in the audit bucket only its quarantine/
and manifests/ prefixes; a person's credentials never reach audit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from daskplatform.settings import BUCKET_KINDS, DATA_BUCKET_KINDS, DataAccess, DataAccessSettings

READ_OBJECTS = ("s3:GetObject",)
WRITE_OBJECTS = ("s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload")
"""Multipart uploads (s3fs writes large files so) need only PutObject, and Abort to
clean up after a failed one."""
LIST_BUCKET = ("s3:ListBucket", "s3:GetBucketLocation")
PIPELINE_ROLE = "pipeline"
"""The data role key of the pipeline's service account, beside the platform groups'."""
PIPELINE_AUDIT_PREFIXES = ("quarantine/", "manifests/")
"""Where the AppsFlyer pipeline writes in the audit bucket (daskplatform.appsflyer)."""
SESSION_ACTIONS = ("sts:AssumeRole",)
"""What the gateway's role may do to a data role (and all the trust policy allows)."""


def objects(bucket_arn: str) -> str:
    return f"{bucket_arn}/*"


def _bucket_statements(access: DataAccess, bucket_arns: Mapping[str, str]) -> list[dict]:
    statements: list[dict[str, Any]] = []
    for kind in DATA_BUCKET_KINDS:
        level = getattr(access, kind)
        if level == "none":
            continue
        arn = bucket_arns[kind]
        title = kind.capitalize()
        statements.append({"Sid": f"List{title}", "Effect": "Allow",
                           "Action": list(LIST_BUCKET), "Resource": arn})
        actions = READ_OBJECTS + (WRITE_OBJECTS if level == "readwrite" else ())
        statements.append({"Sid": f"{'ReadWrite' if level == 'readwrite' else 'Read'}{title}",
                           "Effect": "Allow", "Action": list(actions),
                           "Resource": objects(arn)})
    return statements


def _never(arns: list[str]) -> dict[str, Any]:
    return {"Sid": "NeverPlatformBuckets", "Effect": "Deny", "Action": "s3:*",
            "Resource": [*arns, *(objects(arn) for arn in arns)]}


def role_policy(access: DataAccess, bucket_arns: Mapping[str, str]) -> dict[str, Any]:
    """The permissions of one group's data role; ``bucket_arns`` by kind (all four)."""
    platform = [bucket_arns[k] for k in BUCKET_KINDS if k not in DATA_BUCKET_KINDS]
    return {"Version": "2012-10-17",
            "Statement": [*_bucket_statements(access, bucket_arns), _never(platform)]}


def pipeline_policy(bucket_arns: Mapping[str, str]) -> dict[str, Any]:
    """The pipeline's role: raw drops read, processed data read and written, and in the
    audit bucket its own prefixes only; never the runtime archives."""
    audit = bucket_arns["audit"]
    prefixes = [p.rstrip("/") for p in PIPELINE_AUDIT_PREFIXES]
    return {"Version": "2012-10-17", "Statement": [
        *_bucket_statements(DataAccess(raw="read", processed="readwrite"), bucket_arns),
        {"Sid": "ListPipelineAudit", "Effect": "Allow", "Action": list(LIST_BUCKET),
         "Resource": audit, "Condition": {"StringLike": {"s3:prefix": [
             f"{p}*" for p in prefixes]}}},
        # The bare prefix too: s3fs asks for it as a key (HEAD) before listing, and
        # without it S3 answers 403, not 404.
        {"Sid": "ReadWritePipelineAudit", "Effect": "Allow",
         "Action": list(READ_OBJECTS + WRITE_OBJECTS),
         "Resource": [key for p in prefixes for key in (f"{audit}/{p}", f"{audit}/{p}/*")]},
        _never([bucket_arns["artifacts"]])]}


def policy_for(key: str, access: DataAccessSettings,
               bucket_arns: Mapping[str, str]) -> dict[str, Any]:
    """The policy of the data role ``key``: a platform group's, or the pipeline's."""
    if key == PIPELINE_ROLE:
        return pipeline_policy(bucket_arns)
    return role_policy(access.groups[key], bucket_arns)


def trust_policy(gateway_role_arn: str) -> dict[str, Any]:
    """Only the gateway host's role may assume a data role: user code gets its
    credentials through the gateway, which names the session after the user."""
    return {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": gateway_role_arn},
        "Action": list(SESSION_ACTIONS)}]}


def gateway_policy(data_role_arns: list[str]) -> dict[str, Any]:
    """What the gateway's role may do with the data roles: assume exactly these."""
    return {"Version": "2012-10-17", "Statement": [{
        "Sid": "VendDataCredentials", "Effect": "Allow", "Action": list(SESSION_ACTIONS),
        "Resource": sorted(data_role_arns)}]}
