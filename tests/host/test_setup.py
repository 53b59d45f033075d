"""host-setup's boot steps: the fstab it writes, mount detection, settings read while
AWS is not reachable yet, and (as root, in a throwaway mount namespace) that running it
twice changes nothing the second time."""

from __future__ import annotations

import argparse
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from daskplatform.host import setup
from daskplatform.settings import RuntimeSettings
from tests.conftest import free_port
from tests.host.throwaway import run_in_throwaway_host

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: a private mount "
                                "namespace with overlays (CI runs as root)")
LINE = setup.efs_fstab_line("fs-0123456789abcdef0", "fsap-0aaaaaaaaaaaaaaa1", "/srv/homes")


def test_the_efs_line_mounts_through_its_access_point_with_tls_and_iam() -> None:
    assert LINE == ("fs-0123456789abcdef0:/ /srv/homes efs "
                    "_netdev,noresvport,tls,iam,accesspoint=fsap-0aaaaaaaaaaaaaaa1 0 0")


def test_fstab_gets_the_line_once_and_keeps_everything_else() -> None:
    base = "UUID=abc / xfs defaults 0 0\n# /srv/homes was once elsewhere\n"
    once = setup.fstab_with(base, LINE)
    assert once == base + LINE + "\n"
    assert setup.fstab_with(once, LINE) == once
    stale = base + "fs-old:/ /srv/homes efs _netdev,tls 0 0\n"
    assert setup.fstab_with(stale, LINE) == base + LINE + "\n"


def test_mount_points_are_read_from_mountinfo() -> None:
    mountinfo = ("36 25 0:32 / /srv/homes rw - nfs4 fs:/ rw\n"
                 "37 25 0:33 / /srv/with\\040space rw - tmpfs tmpfs rw\n")
    assert setup.is_mounted("/srv/homes", mountinfo)
    assert setup.is_mounted("/srv/with space", mountinfo)
    assert not setup.is_mounted("/srv/shared", mountinfo)
    assert not setup.is_mounted("/srv", mountinfo)


def _argv(settings: str, role: str = "worker") -> list[str]:
    return ["--role", role, "--settings", settings, "--region", "eu-west-1",
            "--file-system", "fs-0123456789abcdef0", "--shared-access-point", "fsap-1",
            "--homes-access-point", "fsap-2"]


def _args(settings: str, role: str = "worker") -> argparse.Namespace:
    return setup._parser().parse_args(_argv(settings, role))


def test_an_admin_shell_on_the_gateway_finds_this_stack_without_flags(tmp_path: Path) -> None:
    """``dask-platform users`` on the gateway host reads the settings and the audit bucket
    from the profile host-setup writes; a shell sourcing it gets exactly those values."""
    args = setup._parser().parse_args([
        *_argv("ssm:///dask-platform/dev/runtime-settings", "gateway"),
        "--audit-bucket", "dp-audit-1", "--alert-topic-arn", "arn:aws:sns:eu-west-1:1:t"])
    profile = tmp_path / "profile.sh"
    profile.write_text(setup.operator_profile(args))
    shown = subprocess.run(["sh", "-c", f". {profile}; env"], capture_output=True, text=True,
                           check=True, env={}).stdout.splitlines()
    assert {line for line in shown if line.startswith(("DASK_PLATFORM_", "AWS_"))} == {
        "DASK_PLATFORM_SETTINGS=ssm:///dask-platform/dev/runtime-settings",
        "AWS_DEFAULT_REGION=eu-west-1", "DASK_PLATFORM_AUDIT_BUCKET=dp-audit-1"}
    # A worker has no audit bucket: nothing empty is exported.
    assert "AUDIT" not in setup.operator_profile(_args("ssm:///p"))


def test_settings_are_read_once_aws_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a first boot NAT routes may not carry traffic yet: host-setup keeps trying."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    monkeypatch.setenv("DASK_PLATFORM_AWS_ENDPOINT", f"http://127.0.0.1:{port}")
    for name, value in (("AWS_ACCESS_KEY_ID", "x"), ("AWS_SECRET_ACCESS_KEY", "x"),
                        ("AWS_DEFAULT_REGION", "eu-west-1")):
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(setup, "RETRY_WAIT_SECONDS", 0.2)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)

    def late_aws() -> None:
        time.sleep(2)
        server.start()
        import boto3
        boto3.client("ssm", endpoint_url=f"http://127.0.0.1:{port}").put_parameter(
            Name="/late/settings", Type="String", Value=RuntimeSettings().to_json())

    thread = threading.Thread(target=late_aws)
    thread.start()
    try:
        settings = setup.HostSetup(_args("ssm:///late/settings")).read_settings()
    finally:
        thread.join()
        server.stop()
    assert settings == RuntimeSettings()


def test_settings_that_never_come_fail_with_what_to_check(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(setup, "SETTINGS_TRIES", 2)
    monkeypatch.setattr(setup, "RETRY_WAIT_SECONDS", 0.01)
    with pytest.raises(setup.SetupFailed, match="is the parameter there and may this host"):
        setup.HostSetup(_args(str(tmp_path / "missing.json"))).read_settings()


RUN_TWICE = """
    from pathlib import Path
    from daskplatform.host import setup
    for _ in range(2):
        setup.HostSetup(setup._parser().parse_args(sys.argv[1:])).run_steps()
    print(Path("/etc/fstab").read_text())
    print("CA", Path("/etc/dask-platform/ldap-ca.pem").read_text().count("BEGIN CERTIFICATE"))
    listing = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True).stdout
    print("GUARD", listing.count("table inet dask_platform_users"), listing.count("reject"))
"""


@needs_root
def test_running_host_setup_twice_changes_nothing_the_second_time(tmp_path: Path) -> None:
    from daskplatform.tls import CertificateAuthority

    settings = tmp_path / "settings.json"
    settings.write_text(RuntimeSettings(
        ldap_ca_bundle=CertificateAuthority("test CA").pem).to_json())
    args = ["--role", "worker", "--settings", str(settings), "--region", "eu-west-1",
            "--file-system", "fs-0123456789abcdef0", "--shared-access-point", "fsap-1",
            "--homes-access-point", "fsap-2"]
    done = run_in_throwaway_host(tmp_path / "disk", RUN_TWICE, *args)
    assert done.returncode == 0, done.stderr
    fstab = done.stdout.split("\nCA ")[0]
    assert fstab.count("fs-0123456789abcdef0:/ /srv/homes efs") == 1
    assert fstab.count("fs-0123456789abcdef0:/ /srv/shared efs") == 1
    assert "CA 1" in done.stdout
    assert "GUARD 1 3" in done.stdout  # one table of three rules after two runs
    assert not Path("/etc/dask-platform").exists()  # only the throwaway host changed
