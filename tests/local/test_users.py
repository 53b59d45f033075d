"""On- and offboarding end to end, on ``dask-platform local --hub``: the real directory
(slapd, written with the admin's own login), the gateway, JupyterHub and moto's S3.
A user is added, works, and is removed: membership, home, running cluster, hub token,
archive and the audit trail, each checked where it lives."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from dask_gateway import BasicAuth, Gateway

from daskplatform.audit import read
from tests.conftest import free_port, let_users_through
from tests.identity.conftest import hub_login
from tests.local.test_isolation import needs_root
from tests.local.test_local import REPO, LocalRun

USER, UID = "outsider1", 10004
"""In the demo directory but in no platform group (daskplatform/identity/slapd.py)."""


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[tuple[str, Path, dict[str, str]]]:
    let_users_through(tmp_path)
    state = tmp_path / "state"
    hub_port = free_port()
    run = LocalRun("--hub", "--hub-port", str(hub_port), "--state-dir", str(state))
    try:
        aws = run.wait_for("local:   AWS at ")
        endpoint = re.search(r"AWS at (\S+)", aws).group(1)
        run.wait_for("ready: ")
        env = {**os.environ, "AWS_ENDPOINT_URL": endpoint, "DASK_PLATFORM_AWS_ENDPOINT":
               endpoint, "AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local",
               "AWS_DEFAULT_REGION": "eu-west-1", "DASK_PLATFORM_PASSWORD": "admin1-demo"}
        yield f"http://127.0.0.1:{hub_port}", state, env
    finally:
        run.kill()


def users(hub: str, state: Path, env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "daskplatform.cli", "users", *args, "--admin", "admin1",
         "--settings", "ssm:///dask-platform/local/runtime-settings",
         "--gateway", f"{hub}/services/dask-gateway", "--homes", str(state / "homes"),
         "--audit-bucket", "dask-platform-local-audit"],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=180, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _hub_token(hub: str) -> str:
    assert asyncio.run(hub_login(hub, USER, f"{USER}-demo"))[0] == 302
    request = urllib.request.Request(
        f"{hub}/hub/api/users/{USER}/tokens", method="POST",
        data=json.dumps({"auth": {"username": USER, "password": f"{USER}-demo"},
                         "note": "a script"}).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["token"]


def _status(url: str, token: str) -> int:
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


@needs_root
def test_a_user_is_added_works_and_is_removed_with_nothing_left(
        platform: tuple[str, Path, dict[str, str]]) -> None:
    import boto3

    hub, state, env = platform
    gateway_url = f"{hub}/services/dask-gateway"
    with pytest.raises(Exception, match="403"):  # not onboarded yet
        Gateway(gateway_url, auth=BasicAuth(USER, f"{USER}-demo")).list_clusters()

    dry = users(hub, state, env, "add", USER, "--group", "data_analysts", "--dry-run")
    assert "would: add outsider1 to data_analysts" in dry and not (state / "homes" / USER).exists()
    added = users(hub, state, env, "add", USER, "--group", "data_analysts")
    assert "done: add outsider1 to data_analysts" in added and "next, outsider1" in added
    home = state / "homes" / USER
    assert (home.stat().st_uid, home.stat().st_mode & 0o777) == (UID, 0o700)
    assert "nothing changed" in users(hub, state, env, "add", USER, "--group",
                                      "data_analysts")

    (home / "analysis.py").write_text("print('kept in the archive')\n")
    token = _hub_token(hub)
    gateway = Gateway(gateway_url, auth=BasicAuth(USER, f"{USER}-demo"))
    cluster = gateway.new_cluster(shutdown_on_close=False)
    assert [c.name for c in gateway.list_clusters()] == [cluster.name]
    assert "outsider1" in users(hub, state, env, "list")

    removed = users(hub, state, env, "remove", USER)
    for step in ("stop outsider1's clusters", "revoke hub token", "remove outsider1 from "
                 "data_analysts", "archive", "remove " + str(home)):
        assert f"done: {step}" in removed, removed
    assert not home.exists()
    with Gateway(gateway_url, auth=BasicAuth("admin1", "admin1-demo")) as admin:
        assert cluster.name not in [c.name for c in admin.list_clusters()]
    assert _status(f"{hub}/hub/api/user", token) == 403  # the token is revoked
    with pytest.raises(Exception, match="403"):  # and the account no longer admitted,
        Gateway(gateway_url, auth=BasicAuth(USER, f"{USER}-demo")).list_clusters()
    with pytest.raises(Exception, match="403"):  # not even with the cookie it had
        gateway.list_clusters()
    s3 = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="eu-west-1",
                      aws_access_key_id="local", aws_secret_access_key="local")
    (archive,) = s3.list_objects_v2(Bucket="dask-platform-local-audit",
                                    Prefix=f"home-archives/{USER}-")["Contents"]
    body = s3.get_object(Bucket="dask-platform-local-audit", Key=archive["Key"])
    assert body["ServerSideEncryption"] == "aws:kms"
    with tarfile.open(fileobj=io.BytesIO(body["Body"].read())) as tar:
        assert "outsider1/analysis.py" in tar.getnames()
    assert "is gone already" in users(hub, state, env, "remove", USER)

    events = [(e["event"], e["user"], e.get("by")) for e in
              read(state / "gateway" / "audit.log")]
    for step in ("user.added", "user.home_created", "user.work_stopped", "user.token_revoked",
                 "user.group_left", "user.home_archived", "user.home_removed"):
        assert (step, USER, "admin1") in events, step
    logins = [e for e in read(state / "gateway" / "audit.log") if e["event"] == "login"]
    assert any(e["user"] == USER and e["ok"] for e in logins)
    assert any(e["user"] == USER and not e["ok"] for e in logins)
    # A client's first, credential-less round answers the challenge: it is no failed login.
    assert not [e for e in logins if e["user"] == "(none)"]
    assert not [e for e in logins if "outsider1-demo" in json.dumps(e)]  # no password
