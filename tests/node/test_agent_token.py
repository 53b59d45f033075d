"""The agents' bearer token through Secrets Manager (moto server): the gateway fills
the empty secret the stack created, agents wait for it, and everyone gets one value."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from daskplatform.agent_token import (
    MIN_TOKEN_CHARS,
    AgentTokenError,
    ensure_agent_token,
    wait_for_agent_token,
)
from daskplatform.aws import aws_client


@pytest.fixture
def empty_secret(aws_env: str) -> str:
    """A secret with no value, as the stack creates it."""
    name = f"dask-platform/test-{uuid.uuid4().hex[:8]}/agent-token"
    aws_client("secretsmanager").create_secret(Name=name)
    return name


def versions(secret_id: str) -> int:
    return len(aws_client("secretsmanager").list_secret_version_ids(
        SecretId=secret_id)["Versions"])


def test_the_first_gateway_creates_the_token_and_later_calls_reuse_it(
        empty_secret: str) -> None:
    token = ensure_agent_token(empty_secret)
    assert len(token) >= MIN_TOKEN_CHARS
    assert ensure_agent_token(empty_secret) == token
    stored = aws_client("secretsmanager").get_secret_value(SecretId=empty_secret)
    assert stored["SecretString"] == token
    assert versions(empty_secret) == 1


def test_gateways_starting_together_agree_on_one_token(empty_secret: str) -> None:
    start = threading.Barrier(6)

    def gateway() -> str:
        start.wait(10)
        return ensure_agent_token(empty_secret)

    with ThreadPoolExecutor(6) as pool:
        tokens = set(pool.map(lambda _: gateway(), range(6)))
    assert len(tokens) == 1
    assert versions(empty_secret) == 1


def test_an_operator_set_token_is_kept(empty_secret: str) -> None:
    chosen = "operator-chosen-token-0123456789"
    aws_client("secretsmanager").put_secret_value(SecretId=empty_secret, SecretString=chosen)
    assert ensure_agent_token(empty_secret) == chosen
    assert wait_for_agent_token(empty_secret, timeout_s=1, poll_s=0.1) == chosen


def test_a_node_waits_until_the_gateway_has_stored_it(empty_secret: str) -> None:
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(wait_for_agent_token, empty_secret, 20, 0.1)
        threading.Event().wait(0.5)
        assert not waiting.done()
        token = ensure_agent_token(empty_secret)
        assert waiting.result(20) == token


def test_waiting_in_vain_ends_with_an_error_naming_the_secret(empty_secret: str) -> None:
    with pytest.raises(AgentTokenError, match=f"{empty_secret}.*no value.*after 0.3s"):
        wait_for_agent_token(empty_secret, timeout_s=0.3, poll_s=0.1)


def test_a_missing_secret_is_named(aws_env: str) -> None:
    missing = f"dask-platform/nowhere-{uuid.uuid4().hex[:8]}/agent-token"
    with pytest.raises(AgentTokenError, match=f"{missing}.*does not exist"):
        ensure_agent_token(missing)


def test_a_too_short_stored_token_is_refused_on_both_sides(empty_secret: str) -> None:
    aws_client("secretsmanager").put_secret_value(SecretId=empty_secret, SecretString="short")
    for read in (ensure_agent_token,
                 lambda secret: wait_for_agent_token(secret, timeout_s=1, poll_s=0.1)):
        with pytest.raises(AgentTokenError, match=f"{empty_secret}.*shorter than 16"):
            read(empty_secret)
