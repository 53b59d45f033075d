"""``host-upgrade``: another runtime version fetched from the artifacts bucket (moto),
checked against its content hash, installed beside the current one and made current;
a wrong archive installs nothing. Paths under a test folder stand in for /opt."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import boto3
import pytest

from daskplatform.host import upgrade
from daskplatform.runtime_version import archive_key, write_archive

BUCKET = "upgrade-test-artifacts"


@pytest.fixture
def host(tmp_path: Path, aws_env: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A host installed at version ``aaaaaaaaaaaa`` by its user data."""
    root = tmp_path / "opt"
    (root / "venvs").mkdir(parents=True)
    (root / "venvs" / "aaaaaaaaaaaa").symlink_to(tmp_path)
    (root / "venv").symlink_to(root / "venvs" / "aaaaaaaaaaaa")
    (root / "runtime-version").write_text("aaaaaaaaaaaa\n")
    (root / "install.json").write_text(json.dumps(
        {"bucket": BUCKET, "region": "eu-west-1", "extras": ["runtime"]}))
    for name, value in (("INSTALL_RECORD", root / "install.json"), ("SOURCES", root / "src"),
                        ("VENV", str(root / "venv")), ("VENVS", str(root / "venvs")),
                        ("VERSION_FILE", root / "runtime-version")):
        monkeypatch.setattr(upgrade, name, value)
    monkeypatch.setenv(upgrade.INSTALL_MODE_ENV, "link")
    s3 = boto3.client("s3", endpoint_url=aws_env, region_name="eu-west-1")
    if BUCKET not in {b["Name"] for b in s3.list_buckets()["Buckets"]}:
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={
            "LocationConstraint": "eu-west-1"})
    return root


def _upload(tmp_path: Path, aws_env: str, key: str) -> str:
    archive = tmp_path / "runtime.zip"
    version = write_archive(archive)
    boto3.client("s3", endpoint_url=aws_env, region_name="eu-west-1").upload_file(
        str(archive), BUCKET, key or archive_key(version))
    return version


def test_a_new_version_is_installed_beside_the_old_and_made_current(
        host: Path, tmp_path: Path, aws_env: str) -> None:
    version = _upload(tmp_path, aws_env, "")
    said = upgrade.upgrade(version)
    assert (host / "venv").readlink() == host / "venvs" / version
    assert (host / "runtime-version").read_text() == version + "\n"
    assert (host / "venvs" / "aaaaaaaaaaaa").is_symlink()  # running processes keep theirs
    assert (host / "src" / version / "daskplatform" / "host" / "upgrade.py").is_file()
    assert version in said


def test_an_archive_that_is_not_the_version_asked_for_installs_nothing(
        host: Path, tmp_path: Path, aws_env: str) -> None:
    found = _upload(tmp_path, aws_env, archive_key("0123456789ab"))
    with pytest.raises(upgrade.UpgradeFailed, match=f"holds version {found}, not 0123456789ab"):
        upgrade.upgrade("0123456789ab")
    assert (host / "venv").readlink() == host / "venvs" / "aaaaaaaaaaaa"
    assert (host / "runtime-version").read_text() == "aaaaaaaaaaaa\n"


def test_a_version_never_uploaded_or_malformed_is_refused_saying_why(host: Path) -> None:
    with pytest.raises(upgrade.UpgradeFailed, match="has `pulumi up` uploaded that version"):
        upgrade.upgrade("fedcba987654")
    with pytest.raises(upgrade.UpgradeFailed, match="12 hex digits"):
        upgrade.upgrade("../../etc")
    assert upgrade.main(["--version", "nope"]) == 1


@pytest.mark.parametrize(("writes", "exit_code", "installed"), [
    (True, 255, True),  # asyncio's code for a child another reaper collected first
    (False, 0, False),
    (False, 1, False),
])
def test_an_upgrade_in_the_background_succeeds_by_what_the_host_records(
        host: Path, monkeypatch: pytest.MonkeyPatch, writes: bool, exit_code: int,
        installed: bool) -> None:
    """The node agent is a child subreaper: its SIGCHLD reaper may take host-upgrade's
    exit status, so success is the version the host then records as current."""
    script = (f"import pathlib; pathlib.Path({str(upgrade.VERSION_FILE)!r}).write_text("
              f"'bbbbbbbbbbbb\\n') if {writes} else None; print('said'); "
              f"raise SystemExit({exit_code})")
    monkeypatch.setattr(upgrade, "upgrade_argv", lambda _: [sys.executable, "-c", script])
    ok, said = asyncio.run(upgrade.upgrade_in_background("bbbbbbbbbbbb"))
    assert (ok, said) == (installed, "said")
