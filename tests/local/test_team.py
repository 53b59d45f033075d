"""The whole team at once, in local mode at the default cluster shapes: 30 users each get
a running cluster at the same time; a user past their cluster limit is told why; a
user whose workers do not fit the pool waits in order, with their place visible."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import urllib.request
import warnings
from collections.abc import Iterator

import pytest
from dask_gateway import BasicAuth, Gateway

from daskplatform.identity.slapd import load_users
from tests.gateway.conftest import wait_for
from tests.local.test_local import LocalRun

TEAM = 30


@pytest.fixture
def team() -> Iterator[LocalRun]:
    run = LocalRun("--demo-users", str(TEAM))
    try:
        run.wait_for("ready: ")
        yield run
    finally:
        run.kill()


def gateway(run: LocalRun, username: str) -> Gateway:
    return Gateway(f"http://127.0.0.1:{run.port}", asynchronous=True,
                   auth=BasicAuth(username, f"{username}-demo"))


def status(run: LocalRun, username: str) -> dict:
    credentials = base64.b64encode(f"{username}:{username}-demo".encode()).decode()
    request = urllib.request.Request(f"http://127.0.0.1:{run.port}/api/v1/status",
                                     headers={"Authorization": f"Basic {credentials}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


async def _everyone_starts_a_cluster(run: LocalRun) -> list[tuple[str, str]]:
    async def one(username: str) -> tuple[str, str]:
        async with gateway(run, username) as client:
            cluster = await client.new_cluster(shutdown_on_close=False)
            return username, cluster.name

    return await asyncio.gather(*(one(u.username) for u in load_users(TEAM)))


async def _refused_past_the_limit(run: LocalRun, username: str) -> str:
    async with gateway(run, username) as client:
        await client.submit()  # a second one: within the limit of 2
        with pytest.raises(ValueError) as refused:
            await client.submit()
        return str(refused.value)


async def _scale(run: LocalRun, username: str, name: str, count: int) -> list[str]:
    async with gateway(run, username) as client:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            await client.scale_cluster(name, count)
        return [str(w.message) for w in caught]


def placed(run: LocalRun, username: str) -> int:
    return sum(c["workers"]["running"] + c["workers"]["starting"]
               for c in status(run, username)["clusters"])


def test_thirty_users_at_once(team: LocalRun) -> None:
    started = asyncio.run(_everyone_starts_a_cluster(team))
    assert len({name for _, name in started}) == TEAM
    admin = status(team, "user10")  # every tenth is an admin: sees everyone's
    running = [c for c in admin["clusters"] if c["status"] == "RUNNING"]
    assert len(running) == TEAM, admin

    # The 31st cluster request of a user past their group's limit: refused, saying why.
    message = asyncio.run(_refused_past_the_limit(team, "user01"))
    assert ("user user01 already holds 2 cluster(s)" in message
            and "quotas.groups.data_analysts.maxClusters = 2" in message
            and "cluster.shutdown()" in message), message

    # Workers beyond the pool's room wait in order, and say where they stand.
    clusters = dict(started)
    pool_workers = 2 * 2  # local mode here: 2 worker nodes holding 2 default workers each
    asyncio.run(_scale(team, "user02", clusters["user02"], 4))  # an engineer fills the pool
    wait_for(lambda: placed(team, "user02") == pool_workers, 120,
             "user02's four workers were never placed")
    told = asyncio.run(_scale(team, "user04", clusters["user04"], 2))
    assert told and "2 will wait for room in the worker pool" in told[0], told
    waiting = wait_for(lambda: {c["name"]: c for c in status(team, "user04")["clusters"]}[
        clusters["user04"]]["waiting"], 60, "user04's workers are not shown waiting")
    assert waiting.startswith("2 worker(s) waiting for room in the worker pool, the first 1 "
                              "of 2 in line (data_engineers;"), waiting
    assert status(team, "user04")["pool"]["waiting_workers"] == 2
    assert sum(c["workers"]["running"] + c["workers"]["starting"]
               for c in status(team, "user10")["clusters"]) <= pool_workers


def _status_cli(run: LocalRun, user: str, password: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "daskplatform.cli", "status", "--gateway",
                           f"http://127.0.0.1:{run.port}", "--user", user],
                          env={**os.environ, "DASK_PLATFORM_PASSWORD": password},
                          capture_output=True, text=True, timeout=60, check=False)


def test_dask_platform_status_says_what_waits_and_why(team: LocalRun) -> None:
    with Gateway(f"http://127.0.0.1:{team.port}",
                 auth=BasicAuth("user01", "user01-demo")) as client:
        name = client.new_cluster(shutdown_on_close=False).name
        done = _status_cli(team, "user01", "user01-demo")
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("user01; pool: 2 worker node(s), 0 cluster(s) and 0 "
                                      "worker(s) waiting for room")
        assert f"{name}  user01 (data_analysts)  RUNNING  workers: 0 running" in done.stdout
        # Which runtime runs where: one version everywhere here, so nothing mixed.
        assert "\nruntime: gateway " in done.stdout and "MIXED" not in done.stdout
        admin = _status_cli(team, "user10", "user10-demo")
        assert admin.stdout.startswith("user10 (admin: every cluster)") and name in admin.stdout
        refused = _status_cli(team, "user01", "wrong")
        assert refused.returncode == 1
        assert refused.stderr.startswith("dask-platform status: the gateway refused the login "
                                         "(401)")
        client.stop_cluster(name)
