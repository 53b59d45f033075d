"""boto3 clients configured once: botocore's standard retry mode, and an endpoint
override so local mode and tests reach moto's server instead of AWS."""

from __future__ import annotations

import os
from typing import Any

import boto3
from botocore.config import Config

ENDPOINT_ENV = "DASK_PLATFORM_AWS_ENDPOINT"
"""Set to e.g. http://127.0.0.1:5000 to send every AWS call to a moto server."""

_RETRIES = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=5,
                  read_timeout=30)


def aws_client(service: str, *, region: str | None = None,
               endpoint_url: str | None = None) -> Any:
    """A boto3 client for ``service`` with retries and the configured endpoint."""
    return boto3.client(
        service,
        region_name=region or os.environ.get("AWS_DEFAULT_REGION") or "eu-west-1",
        endpoint_url=endpoint_url or os.environ.get(ENDPOINT_ENV) or None,
        config=_RETRIES,
    )


STAND_IN_KEYS = (ENDPOINT_ENV, "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION")
"""Where the stand-in is, never credentials: those come to every user process from its
AWS config's ``credential_process`` (node/aws_config.py), as on AWS."""


def stand_in_env() -> dict[str, str]:
    """Where a Dask process finds an AWS stand-in (moto: local mode, tests, the
    rehearsal), taken from this process when ``ENDPOINT_ENV`` names one; nothing when
    talking to AWS itself. Credentials never travel this way: user processes get their
    group's (or the pipeline's) vended ones, as on AWS."""
    if not os.environ.get(ENDPOINT_ENV):
        return {}
    return {key: os.environ[key] for key in STAND_IN_KEYS if key in os.environ}
