"""One uid per user, tried as a hostile user would (local mode as root, real processes):
each user's Dask processes run under their own uid from the directory, with a private
home; a task of one user cannot read the other's keys, working directory, process
environment or the agent token, and cannot reach the other's scheduler with what it can
read."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from dask_gateway import BasicAuth, Gateway

from tests.conftest import let_users_through
from tests.local.test_local import LocalRun

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: processes under "
                                "other users' uids (CI runs as root)")
UIDS = {"engineer1": 10001, "analyst1": 10002}
"""uidNumber of the demo users in the directory (daskplatform/identity/slapd.py)."""


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[tuple[LocalRun, Path]]:
    let_users_through(tmp_path)
    state = tmp_path / "state"
    run = LocalRun("--state-dir", str(state))
    try:
        line = run.wait_for("local: every Dask process runs")
        assert "under its user's uid" in line, line
        run.wait_for("ready: ")
        yield run, state
    finally:
        run.kill()


def processes(state: Path, user: str) -> list[dict[str, Any]]:
    """The live processes the agents started for ``user``, with their directory."""
    found = []
    for state_file in state.glob("agents/*/state.json"):
        for record in json.loads(state_file.read_text())["records"]:
            if record["labels"].get("user") == user and record["state"] in ("starting",
                                                                          "running"):
                found.append({**record, "dir": state_file.parent / "procs" / record["id"]})
    return found


def attack(paths: dict[str, str], other_scheduler: str) -> dict[str, Any]:
    """Run on the attacker's own worker: try each of the other user's things."""
    import os as os_
    import ssl

    from distributed import Client
    from distributed.security import Security

    tried: dict[str, Any] = {"uid": os_.getuid(), "gid": os_.getgid(),
                             "home": os_.environ["HOME"]}
    for name, path in paths.items():
        try:
            if os_.path.isdir(path):
                os_.listdir(path)
            else:
                with open(path, "rb") as fh:
                    fh.read()
            tried[name] = "read"
        except PermissionError:
            tried[name] = "denied"
        except OSError as exc:
            tried[name] = f"error: {exc}"
    # The attacker's own cluster credentials are all it can read: they do not open
    # another cluster's scheduler (each cluster has its own CA).
    security = Security(tls_ca_file="dask.crt", tls_client_cert="dask.crt",
                        tls_client_key="dask.pem", require_encryption=True)
    try:
        with Client(other_scheduler, security=security, timeout=5):
            tried["other scheduler"] = "connected"
    except (OSError, ssl.SSLError, TimeoutError) as exc:
        tried["other scheduler"] = f"refused: {type(exc).__name__}"
    return tried


@needs_root
def test_a_user_cannot_touch_another_users_work(platform: tuple[LocalRun, Path]) -> None:
    run, state = platform
    address = f"http://127.0.0.1:{run.port}"
    with Gateway(address, auth=BasicAuth("engineer1", "engineer1-demo")) as mine, \
            Gateway(address, auth=BasicAuth("analyst1", "analyst1-demo")) as theirs, \
            mine.new_cluster() as my_cluster, theirs.new_cluster() as their_cluster, \
            my_cluster.get_client(set_as_default=False) as client, \
            their_cluster.get_client(set_as_default=False) as their_client:
        my_cluster.scale(1)
        their_cluster.scale(1)
        client.wait_for_workers(1, timeout=120)
        their_client.wait_for_workers(1, timeout=120)
        # Every process runs under its user's uid and gid, never the agent's (root).
        for user, uid in UIDS.items():
            for record in processes(state, user):
                assert psutil.Process(record["pid"]).uids().real == uid, record
                directory = record["dir"].stat()
                assert (directory.st_uid, stat.S_IMODE(directory.st_mode)) == (uid, 0o700)
                assert stat.S_IMODE((record["dir"] / "dask.pem").stat().st_mode) == 0o600
            home = (state / "homes" / user).stat()
            assert (home.st_uid, home.st_gid, stat.S_IMODE(home.st_mode)) == (uid, uid, 0o700)
        victim = next(r for r in processes(state, "analyst1") if r["kind"] == "worker")
        paths = {"their TLS key": str(victim["dir"] / "dask.pem"),
                 "their working directory": str(victim["dir"]),
                 "their process environment": f"/proc/{victim['pid']}/environ",
                 "their home": str(state / "homes" / "analyst1"),
                 "the agent token": str(state / "agent-token"),
                 "the agents' state": str(victim["dir"].parent.parent / "state.json")}
        their_scheduler = their_client.scheduler_info()["address"]
        tried = client.submit(attack, paths, their_scheduler, pure=False).result(timeout=120)
        assert (tried["uid"], tried["gid"]) == (UIDS["engineer1"], UIDS["engineer1"])
        assert tried["home"] == str(state / "homes" / "engineer1")
        for name in paths:
            assert tried[name] == "denied", (name, tried)
        assert tried["other scheduler"].startswith("refused"), tried
        # The scheduler it could not reach is there: its owner computes on it.
        assert their_client.submit(sum, [1, 2]).result(timeout=60) == 3
