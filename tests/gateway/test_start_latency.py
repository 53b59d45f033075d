"""Cluster start latency, against a real gateway and node agents and moto's CloudWatch:
what the gateway publishes for a cluster is the time from its request to its first
worker running, as seen from outside, once per cluster and per group."""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime, timedelta

from daskplatform.aws import aws_client
from daskplatform.settings import CLUSTER_START_METRIC
from tests.gateway.conftest import Pool
from tests.gateway.test_aws import AWS_KEYS


def _published(namespace: str, dimensions: list[dict[str, str]]) -> dict | None:
    now = datetime.now(UTC)
    points = aws_client("cloudwatch").get_metric_statistics(
        Namespace=namespace, MetricName=CLUSTER_START_METRIC, Dimensions=dimensions,
        Statistics=["SampleCount", "Minimum", "Maximum"], StartTime=now - timedelta(hours=1),
        EndTime=now + timedelta(minutes=1), Period=3600)["Datapoints"]
    return points[0] if points else None


def _running_workers(pool: Pool) -> int:
    status, body = pool.api("GET", "/api/v1/status", "ann")
    assert status == 200, body
    return sum(c["workers"]["running"] for c in body["clusters"])


def test_a_started_cluster_records_request_to_first_worker_running(
        aws_env: str, make_pool) -> None:
    namespace = f"test-{uuid.uuid4().hex[:8]}"
    pool: Pool = make_pool(env={k: os.environ[k] for k in AWS_KEYS})
    pool.add_agent("sched-1", "scheduler", cores=1, memory_gb=1)
    pool.add_agent("w-1", "worker", cores=1, memory_gb=1)
    pool.start_gateway(extra_config="c.PoolBackend.metrics_period = 0.5\n",
                       extra_args=["--metrics-namespace", namespace])
    with pool.client("ann") as gateway:
        requested_from = time.time()
        cluster = gateway.new_cluster()
        requested_by = time.time()
        try:
            cluster.scale(1)
            not_running_at = time.time()
            deadline = time.monotonic() + 90
            while _running_workers(pool) == 0:  # the gateway's own view, polled closely
                assert time.monotonic() < deadline, "the worker never ran"
                not_running_at = time.time()
                time.sleep(0.1)
            running_by = time.time()
            group = [{"Name": "Group", "Value": "data_analysts"}]
            deadline = time.monotonic() + 20
            while _published(namespace, group) is None:
                assert time.monotonic() < deadline, "no ClusterStartLatencySeconds published"
                time.sleep(0.5)
            time.sleep(2)  # four more rounds and a heartbeat each second: still one sample
            point = _published(namespace, group)
        finally:
            cluster.shutdown()
    assert point["SampleCount"] == 1 and point["Unit"] == "Seconds"
    latency = point["Maximum"]
    # The request fell within [requested_from, requested_by] and the first worker started
    # running within [not_running_at, running_by]; the start time has millisecond steps.
    assert not_running_at - requested_by - 0.001 <= latency <= running_by - requested_from
    assert latency > 0
    # The alarm's series, without dimensions, beside the group's (moto's statistics
    # ignore an empty dimension filter, so list the series instead).
    series = aws_client("cloudwatch").list_metrics(
        Namespace=namespace, MetricName=CLUSTER_START_METRIC)["Metrics"]
    assert sorted(str(m["Dimensions"]) for m in series) == sorted([str(group), "[]"])
