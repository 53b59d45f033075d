"""The agent's IMDSv2 client against a stand-in that refuses requests without a session
token, and ``--advertise-host imds`` resolving the node's id and address from it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from daskplatform.node import agent
from daskplatform.node.imds import ENDPOINT_ENV, MetadataUnavailable, instance_identity
from daskplatform.settings import RuntimeSettings
from tests.conftest import free_port
from tests.node.imds_stand_in import imds_stand_in

INSTANCE_ID = "i-0123456789abcdef0"
PRIVATE_IP = "10.0.1.23"
METADATA = {"instance_id": INSTANCE_ID, "local_ipv4": PRIVATE_IP, "instance_type": "c5.large"}


def test_identity_is_read_with_a_session_token(monkeypatch: pytest.MonkeyPatch) -> None:
    with imds_stand_in(monkeypatch, **METADATA) as imds:
        found = instance_identity()
    assert (found.instance_id, found.private_ipv4, found.instance_type) == (
        INSTANCE_ID, PRIVATE_IP, "c5.large")
    assert imds.requests[0] == ("PUT", "/latest/api/token")
    assert sorted(imds.requests[1:]) == [("GET", "/latest/meta-data/instance-id"),
                                         ("GET", "/latest/meta-data/instance-type"),
                                         ("GET", "/latest/meta-data/local-ipv4")]


def test_a_value_that_is_not_an_ipv4_address_is_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    with imds_stand_in(monkeypatch, **{**METADATA, "local_ipv4": "<html>oops</html>"}), \
            pytest.raises(MetadataUnavailable, match="local-ipv4.*not an IPv4 address"):
        instance_identity()


def test_a_missing_key_names_the_path(monkeypatch: pytest.MonkeyPatch) -> None:
    with imds_stand_in(monkeypatch, local_ipv4=PRIVATE_IP), \
            pytest.raises(MetadataUnavailable, match="meta-data/instance-id"):  # no such key
        instance_identity()


def test_off_ec2_it_fails_fast_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENDPOINT_ENV, f"http://127.0.0.1:{free_port()}")  # nothing listens
    started = time.monotonic()
    with pytest.raises(MetadataUnavailable, match="--advertise-host imds works only on EC2"):
        instance_identity(timeout=1)
    assert time.monotonic() - started < 5


@pytest.fixture
def settings_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "settings.json"
    path.write_text(RuntimeSettings().to_json())
    monkeypatch.setenv(agent.TOKEN_ENV, "t" * 32)
    return path


def test_advertise_imds_names_the_node_by_instance_id_and_advertises_its_ip(
        monkeypatch: pytest.MonkeyPatch, settings_file: Path) -> None:
    argv = ["--role", "worker", "--settings", str(settings_file), "--host", "0.0.0.0",
            "--advertise-host", "imds", "--cores", "1", "--memory-gb", "1"]
    with imds_stand_in(monkeypatch, **METADATA):
        _, shape, _ = agent.resolve(agent.parse_args(argv))
        _, named, _ = agent.resolve(agent.parse_args([*argv, "--node-id", "w-7"]))
    assert (shape.node_id, shape.host) == (INSTANCE_ID, PRIVATE_IP)
    assert (named.node_id, named.host) == ("w-7", PRIVATE_IP)


@pytest.mark.parametrize("instance_type, cores, memory_gb", [
    ("c5.large", 2, 4 - 0.5), ("c5.xlarge", 4, 8 - 0.5), ("m5.large", 2, 8 - 0.5)])
def test_on_ec2_capacity_is_the_instance_types_shape(
        monkeypatch: pytest.MonkeyPatch, settings_file: Path, instance_type: str,
        cores: float, memory_gb: float) -> None:
    """The quota checks assume each node offers its type's shape less the node reserve;
    the agent offers the same (never more memory than the machine has)."""
    argv = ["--role", "worker", "--settings", str(settings_file), "--host", "0.0.0.0",
            "--advertise-host", "imds"]
    monkeypatch.setattr(agent.psutil, "virtual_memory", lambda: type("M", (), {
        "total": 64 << 30})())
    with imds_stand_in(monkeypatch, **{**METADATA, "instance_type": instance_type}):
        _, shape, _ = agent.resolve(agent.parse_args(argv))
        monkeypatch.setattr(agent.psutil, "virtual_memory", lambda: type("M", (), {
            "total": 3 << 30})())
        _, small, _ = agent.resolve(agent.parse_args(argv))
    assert (shape.cores, shape.memory_gb) == (cores, memory_gb)
    assert small.memory_gb == 3 - 0.5  # a machine smaller than its nominal type


def test_agent_without_any_token_source_says_where_one_comes_from(
        monkeypatch: pytest.MonkeyPatch, settings_file: Path) -> None:
    monkeypatch.delenv(agent.TOKEN_ENV)
    argv = ["--role", "worker", "--settings", str(settings_file), "--cores", "1",
            "--memory-gb", "1"]
    with pytest.raises(SystemExit, match="agentTokenSecretId"):
        agent.resolve(agent.parse_args(argv))
