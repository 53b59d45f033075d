"""The node agents' bearer token on AWS, kept in a Secrets Manager secret the stack
creates empty: the gateway fills it on its first start, the agents wait until it is
there. So no token ever passes through user data, stack state or the settings.

The gateway puts its value with a fixed client request token (a version id derived
from the secret's name): Secrets Manager accepts only the first such put, so two
gateways starting together still end up sharing one token.
"""

from __future__ import annotations

import secrets
import time
import uuid
from typing import Any

from botocore.exceptions import ClientError

from daskplatform.aws import aws_client

MIN_TOKEN_CHARS = 16
"""Shorter bearer tokens are refused (the agent, the gateway, a stored secret)."""
FIRST_VERSION_NAMESPACE = uuid.UUID("7d5c7c1e-6f0a-4a8e-9a52-0b8f3c0e3d11")
"""Namespace of the first version's id: the same secret always gets the same id."""


class AgentTokenError(RuntimeError):
    """The token secret is missing, unreadable, too short, or not filled in time."""


def _current_value(client: Any, secret_id: str) -> str | None:
    """The secret's current value; None while it has none (or does not exist yet)."""
    try:
        value = client.get_secret_value(SecretId=secret_id).get("SecretString", "")
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ResourceNotFoundException":
            return None
        raise AgentTokenError(f"agent token secret {secret_id!r}: cannot read it "
                              f"({exc.response['Error']['Code']})") from None
    if len(value.strip()) < MIN_TOKEN_CHARS:
        raise AgentTokenError(f"agent token secret {secret_id!r}: its value is shorter than "
                              f"{MIN_TOKEN_CHARS} characters; put a longer one "
                              "(aws secretsmanager put-secret-value)")
    return value.strip()


def ensure_agent_token(secret_id: str) -> str:
    """The token in ``secret_id``, generated and stored first if it has no value yet."""
    client = aws_client("secretsmanager")
    current = _current_value(client, secret_id)
    if current is not None:
        return current
    try:
        client.put_secret_value(
            SecretId=secret_id, SecretString=secrets.token_urlsafe(32),
            ClientRequestToken=str(uuid.uuid5(FIRST_VERSION_NAMESPACE, secret_id)))
    except ClientError as exc:
        code = exc.response["Error"]["Code"]
        if code == "ResourceNotFoundException":
            raise AgentTokenError(f"agent token secret {secret_id!r} does not exist; the "
                                  "stack creates it (components/identity.py)") from None
        # ResourceExists: another gateway put the first version; read theirs below.
        if code != "ResourceExistsException":
            raise AgentTokenError(f"agent token secret {secret_id!r}: cannot store a new "
                                  f"token ({code})") from None
    stored = _current_value(client, secret_id)
    if stored is None:
        raise AgentTokenError(f"agent token secret {secret_id!r} has no value right after "
                              "storing one")
    return stored


def wait_for_agent_token(secret_id: str, timeout_s: float = 600, poll_s: float = 5) -> str:
    """The token in ``secret_id`` once the gateway has stored it, polling until then."""
    client = aws_client("secretsmanager")
    deadline = time.monotonic() + timeout_s
    while True:
        value = _current_value(client, secret_id)
        if value is not None:
            return value
        if time.monotonic() >= deadline:
            raise AgentTokenError(
                f"agent token secret {secret_id!r} has no value (or does not exist) after "
                f"{timeout_s:g}s; the gateway stores it on its first start: is the gateway "
                "host running?")
        time.sleep(poll_s)
