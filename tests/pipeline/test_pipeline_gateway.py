"""The pipeline on a cluster from the platform's own gateway (pool backend, node agents),
reached as a notebook user would: ``--gateway <cluster name>`` with ``Gateway()``
configured by dask config rather than arguments."""

from __future__ import annotations

import json
from pathlib import Path

import dask
import pytest

from daskplatform.appsflyer import generate
from daskplatform.appsflyer.cli import main
from tests.gateway.conftest import PASSWORD, Pool, make_pool  # noqa: F401  (fixture)
from tests.pipeline.helpers import FAULTS, assert_matches_expected, stored_manifest


@pytest.fixture
def pool(make_pool) -> Pool:  # noqa: F811
    pool = make_pool()
    pool.add_agent("sched-1", "scheduler", cores=1, memory_gb=1)
    pool.add_agent("work-1", "worker", cores=1, memory_gb=1.5)
    pool.start_gateway()
    return pool


def test_the_pipeline_runs_on_a_gateway_cluster(
        pool: Pool, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    raw = str(tmp_path / "raw")
    expected = generate(raw, layout="datalocker", rows=1500, days=1, hours=2, seed=5,
                        faults=FAULTS)["expected"]
    gateway_config = {
        "gateway.address": pool.api_url,
        "gateway.proxy-address": pool.tcp_address,
        "gateway.auth.type": "basic",
        "gateway.auth.kwargs": {"username": "ada", "password": PASSWORD},
    }
    with pool.client("ada") as gateway, dask.config.set(gateway_config):
        cluster = gateway.new_cluster(worker_cores=0.5, worker_memory=0.5)
        try:
            cluster.scale(2)
            with cluster.get_client(set_as_default=False) as client:
                client.wait_for_workers(2, timeout=90)
                assert main(["run", "--input", raw, "--processed", str(tmp_path / "out"),
                             "--audit", str(tmp_path / "audit"),
                             "--gateway", cluster.name]) == 0
                ran_there = client.run_on_scheduler(
                    lambda dask_scheduler: set(dask_scheduler.task_prefixes))
        finally:
            cluster.shutdown()
    summary = json.loads(capsys.readouterr().out)
    assert_matches_expected(stored_manifest(summary["manifest"], str(tmp_path)), expected)
    # The work ran on the gateway's cluster, not in this process.
    assert {"stage_input", "dedup_write", "aggregate_day"} <= ran_there
