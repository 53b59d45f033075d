"""The AWS config a node gives its processes: botocore reads the credential_process,
region and endpoint from it; everyone may read it and it holds no secret."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest
from botocore.configloader import load_config

from daskplatform.node.aws_config import user_aws_env


def test_the_config_runs_dask_platform_credentials_and_names_the_stand_in(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://10.0.48.10:443")
    env = user_aws_env(tmp_path)
    assert env == {"AWS_CONFIG_FILE": str(tmp_path / "aws-config"),
                   "AWS_EC2_METADATA_DISABLED": "true"}
    path = Path(env["AWS_CONFIG_FILE"])
    assert path.stat().st_mode & 0o777 == 0o644
    profile = load_config(str(path))["profiles"]["default"]
    assert shlex.split(profile["credential_process"]) == [
        sys.executable, "-m", "daskplatform.cli", "credentials"]
    assert profile["region"] == "eu-west-1"
    assert profile["endpoint_url"] == "http://10.0.48.10:443"


def test_on_aws_there_is_no_endpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("AWS_REGION", "eu-central-1")
    profile = load_config(user_aws_env(tmp_path)["AWS_CONFIG_FILE"])["profiles"]["default"]
    assert "endpoint_url" not in profile and profile["region"] == "eu-central-1"
