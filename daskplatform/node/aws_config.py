"""The AWS config every process a node agent starts reads (``AWS_CONFIG_FILE``): its
credentials come from ``dask-platform credentials`` (short-lived, for its user's
group's data role, from the gateway), never from the instance role.

boto3, s3fs and the AWS CLI run the ``credential_process`` by themselves, and again
before the credentials expire, so a long session never holds a stale set. Instance
metadata is switched off for the SDKs too (``AWS_EC2_METADATA_DISABLED``); the host's
nftables user guard refuses it to user uids in any case. One file per node, readable by
everyone and holding no secret: the command, the region and, where AWS is a stand-in
(local mode, the rehearsal), its endpoint.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

CONFIG_FILE = "aws-config"


def config_text(python: str, region: str, endpoint: str) -> str:
    lines = ["# Written by the node agent (daskplatform/node/aws_config.py): short-lived",
             "# credentials for your group's data role, from the gateway.",
             "[default]",
             f"credential_process = {shlex.join([python, '-m', 'daskplatform.cli', 'credentials'])}"]
    if region:
        lines.append(f"region = {region}")
    if endpoint:
        lines.append(f"endpoint_url = {endpoint}")
    return "\n".join(lines) + "\n"


def user_aws_env(workdir: Path) -> dict[str, str]:
    """Write the node's config into ``workdir`` (which users may pass, not list) and
    return the variables that point the processes' SDKs at it."""
    path = workdir / CONFIG_FILE
    text = config_text(sys.executable,
                       os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION", ""),
                       os.environ.get("AWS_ENDPOINT_URL", ""))
    temporary = path.with_suffix(".new")
    temporary.write_text(text, encoding="utf-8")
    temporary.chmod(0o644)
    temporary.replace(path)
    return {"AWS_CONFIG_FILE": str(path), "AWS_EC2_METADATA_DISABLED": "true"}
