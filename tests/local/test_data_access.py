"""Per-group data credentials end to end, on ``dask-platform local``: the gateway vends
short-lived credentials for the caller's group's data role through moto's STS, moto
enforces the role's policy (the stack's own document), and code in a Dask worker gets
them by itself through ``credential_process``, again before they expire."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import boto3
import pytest
import yaml
from botocore.exceptions import ClientError
from dask_gateway import BasicAuth, Gateway

from daskplatform.audit import read
from tests.conftest import let_users_through
from tests.local.test_local import REPO, LocalRun

SESSION_MINUTES = 15
"""AWS's shortest session: botocore refreshes credentials that have under 15 minutes
left before every call, so each call of a task runs the credential_process again."""
BUCKET = "dask-platform-local-{}"
PASSWORDS = {u: f"{u}-demo" for u in ("engineer1", "analyst1", "outsider1")}


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalRun, str, Path]]:
    folder = tmp_path_factory.mktemp("data")
    let_users_through(folder)
    stack = yaml.safe_load((REPO / "Pulumi.dev.yaml").read_text())
    stack["config"]["dask-platform:dataAccess"] = {"sessionMinutes": SESSION_MINUTES}
    stack_file = folder / "Pulumi.data.yaml"
    stack_file.write_text(yaml.safe_dump(stack))
    run = LocalRun("--stack", str(stack_file), "--state-dir", str(folder / "state"))
    try:
        endpoint = re.search(r"AWS at (\S+)", run.wait_for("local:   AWS at ")).group(1)
        run.wait_for("ready: ")
        admin = boto3.client("s3", endpoint_url=endpoint, region_name="eu-west-1",
                             aws_access_key_id="local", aws_secret_access_key="local")
        for kind in ("raw", "processed"):
            admin.put_object(Bucket=BUCKET.format(kind), Key="events/day=1/part-0.txt",
                             Body=f"{kind} rows".encode())
        yield run, endpoint, folder / "state"
    finally:
        run.kill()


def credentials(run: LocalRun, user: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DASK_PLATFORM_PASSWORD": PASSWORDS[user]}
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "DASK_GATEWAY_API_TOKEN"):
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "daskplatform.cli", "credentials", "--user", user,
         "--gateway", f"http://127.0.0.1:{run.port}"],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=60, check=False)


def outcomes(endpoint: str, vended: dict) -> dict[str, str]:
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="eu-west-1",
                      aws_access_key_id=vended["AccessKeyId"],
                      aws_secret_access_key=vended["SecretAccessKey"],
                      aws_session_token=vended["SessionToken"])
    key = "events/day=1/part-0.txt"
    tries = {
        "read raw": lambda: s3.get_object(Bucket=BUCKET.format("raw"), Key=key),
        "list raw": lambda: s3.list_objects_v2(Bucket=BUCKET.format("raw")),
        "write raw": lambda: s3.put_object(Bucket=BUCKET.format("raw"), Key="new", Body=b"x"),
        "read processed": lambda: s3.get_object(Bucket=BUCKET.format("processed"), Key=key),
        "list processed": lambda: s3.list_objects_v2(Bucket=BUCKET.format("processed")),
        "write processed": lambda: s3.put_object(Bucket=BUCKET.format("processed"),
                                                 Key="new", Body=b"x"),
        "write audit": lambda: s3.put_object(Bucket=BUCKET.format("audit"), Key="quarantine/x",
                                             Body=b"x"),
    }
    found = {}
    for name, attempt in tries.items():
        try:
            attempt()
            found[name] = "ok"
        except ClientError as exc:
            found[name] = exc.response["Error"]["Code"]
    return found


def test_each_group_gets_its_access_and_no_more(
        platform: tuple[LocalRun, str, Path]) -> None:
    run, endpoint, state = platform
    seen = {}
    for user in ("engineer1", "analyst1"):
        done = credentials(run, user)
        assert done.returncode == 0, done.stderr
        vended = json.loads(done.stdout)
        assert vended["Version"] == 1 and vended["AccessKeyId"] != "local"
        left = datetime.fromisoformat(vended["Expiration"]).timestamp() - time.time()
        assert SESSION_MINUTES * 60 - 120 < left <= SESSION_MINUTES * 60 + 5
        seen[user] = outcomes(endpoint, vended)
    everything_but_audit = {name: "ok" for name in seen["engineer1"] if name != "write audit"}
    assert seen["engineer1"] == {**everything_but_audit, "write audit": "AccessDenied"}
    assert seen["analyst1"] == {
        "read raw": "AccessDenied", "list raw": "AccessDenied", "write raw": "AccessDenied",
        "read processed": "ok", "list processed": "ok", "write processed": "AccessDenied",
        "write audit": "AccessDenied"}
    lines = [e for e in read(state / "gateway" / "audit.log")
             if e["event"] == "data.credentials"]
    assert {(e["user"], e["group"], e["via"], e["ok"]) for e in lines} >= {
        ("engineer1", "data_engineers", "password", True),
        ("analyst1", "data_analysts", "password", True)}
    assert all("SecretAccessKey" not in json.dumps(e) and "Token" not in json.dumps(e)
               for e in lines)


def test_a_user_in_no_group_is_refused_saying_why(platform: tuple[LocalRun, str, Path]) -> None:
    done = credentials(platform[0], "outsider1")
    assert done.returncode == 1 and not done.stdout
    assert "403" in done.stderr and "ask to be added to one of" in done.stderr


def in_a_task(raw: str, processed: str) -> dict[str, object]:
    """Run in analyst1's worker: boto3 with no keys and no endpoint (the node's AWS
    config), as user code would."""
    s3 = boto3.client("s3")

    def attempt(call: object) -> str:
        try:
            call()  # type: ignore[operator]
            return "ok"
        except ClientError as exc:
            return exc.response["Error"]["Code"]

    key = "events/day=1/part-0.txt"
    return {"uid": os.getuid(), "imds": os.environ.get("AWS_EC2_METADATA_DISABLED"),
            "read processed": attempt(lambda: s3.get_object(Bucket=processed, Key=key)),
            "read processed again": attempt(lambda: s3.get_object(Bucket=processed, Key=key)),
            "read raw": attempt(lambda: s3.get_object(Bucket=raw, Key=key)),
            "write processed": attempt(lambda: s3.put_object(Bucket=processed, Key="t",
                                                             Body=b"x"))}


def test_a_task_gets_its_groups_credentials_by_itself_and_refreshes_them(
        platform: tuple[LocalRun, str, Path]) -> None:
    run, _, state = platform
    with Gateway(f"http://127.0.0.1:{run.port}", proxy_address=f"gateway://127.0.0.1:{run.port}",
                 auth=BasicAuth("analyst1", PASSWORDS["analyst1"])) as gateway, \
            gateway.new_cluster() as cluster:
        cluster.scale(1)
        with cluster.get_client(set_as_default=False) as client:
            client.wait_for_workers(1, timeout=120)
            found = client.submit(in_a_task, BUCKET.format("raw"),
                                  BUCKET.format("processed")).result(timeout=120)
            name = cluster.name
    assert found["imds"] == "true"
    assert {k: v for k, v in found.items() if k not in ("uid", "imds")} == {
        "read processed": "ok", "read processed again": "ok", "read raw": "AccessDenied",
        "write processed": "AccessDenied"}
    if os.geteuid() == 0:
        assert found["uid"] == 10002  # analyst1's own uid (the directory's uidNumber)
    vended = [e for e in read(state / "gateway" / "audit.log")
              if e["event"] == "data.credentials" and e["via"] == f"cluster {name}"]
    # one set per call: each had under 15 minutes left, so botocore fetched the next
    assert len(vended) >= 4 and {(e["user"], e["group"]) for e in vended} == {
        ("analyst1", "data_analysts")}
