"""The IAM documents of the per-group data roles, from the ``dataAccess`` settings.

One function for every place a data role exists: the stack declares the roles with
these documents (``components/data_roles.py``), and local mode and the rehearsal create
the same roles in moto (``daskplatform/aws_standin.py``), so the refusal a user sees
there is the policy AWS would apply.

Least privilege, bucket by bucket: ``read`` lists the bucket and gets its objects,
``readwrite`` also puts and deletes them; nothing else, and an explicit deny on the
platform's own buckets (audit and artifacts), so that no later statement can open them.
No KMS statement: the buckets use S3-managed keys (SSE-S3, ``components/storage.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from daskplatform.settings import BUCKET_KINDS, DATA_BUCKET_KINDS, DataAccess

READ_OBJECTS = ("s3:GetObject",)
WRITE_OBJECTS = ("s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload")
"""Multipart uploads (s3fs writes large files so) need only PutObject, and Abort to
clean up after a failed one."""
LIST_BUCKET = ("s3:ListBucket", "s3:GetBucketLocation")
SESSION_ACTIONS = ("sts:AssumeRole",)
"""What the gateway's role may do to a data role (and all the trust policy allows)."""


def objects(bucket_arn: str) -> str:
    return f"{bucket_arn}/*"


def role_policy(access: DataAccess, bucket_arns: Mapping[str, str]) -> dict[str, Any]:
    """The permissions of one group's data role; ``bucket_arns`` by kind (all four)."""
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
    platform = [bucket_arns[k] for k in BUCKET_KINDS if k not in DATA_BUCKET_KINDS]
    statements.append({"Sid": "NeverPlatformBuckets", "Effect": "Deny", "Action": "s3:*",
                       "Resource": [*platform, *(objects(arn) for arn in platform)]})
    return {"Version": "2012-10-17", "Statement": statements}


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
