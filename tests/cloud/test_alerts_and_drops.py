"""Monitoring added for operating the platform, under strict mocks: alarms on cluster start
latency, worker memory and EFS burst credits with thresholds from the settings; webhooks
on the alert topic; the raw bucket's notifications into an encrypted queue with a
dead-letter queue that only that bucket may fill; the saved Logs Insights queries; and
the pipeline watcher's IAM."""

from __future__ import annotations

import json
from typing import Any

import pytest

from components.monitoring import ACTIVITY_BY_USER, ERRORS_BY_HOST
from tests.cloud.conftest import of_short_type, one, quiet_run
from tests.cloud.test_identity import statements
from tests.cloud.test_monitoring_and_edge import alerting
from tools.mockrun import StackRun, stack_config

PAGERDUTY = "https://events.pagerduty.com/integration/0123456789abcdef/enqueue"
RELAY = "https://alerts-relay.example.internal/sns"
TUNED = {
    "workerCpuPercent": 90,
    "queuedTasks": 80,
    "clusterStartP90Seconds": 45,
    "workerMemoryPercent": 75,
    "efsBurstCreditGib": 100,
    "webhooks": [{"name": "pagerduty", "url": PAGERDUTY}, {"name": "slack", "url": RELAY}],
}


@pytest.fixture(scope="module")
def tuned() -> StackRun:
    """The dev stack with every monitoring and pipeline setting changed."""
    config: dict[str, Any] = stack_config("dev")
    config["dask-platform:monitoring"] = TUNED
    config["dask-platform:pipeline"] = {"rawPrefix": "drops/appsflyer/", "maxReceives": 5,
                                        "retrySeconds": 120}
    return quiet_run(config, stack="tuned")


def test_latency_memory_and_efs_alarms_use_the_default_thresholds(dev: StackRun) -> None:
    latency = alerting(dev, "monitoring-cluster-start-latency")
    assert (latency["namespace"], latency["metricName"], latency["extendedStatistic"],
            latency["comparisonOperator"], latency["threshold"]) == (
        "DaskPlatform/dev", "ClusterStartLatencySeconds", "p90", "GreaterThanThreshold", 120)
    assert "dimensions" not in latency  # the gateway's series without dimensions
    memory = alerting(dev, "monitoring-worker-memory")
    assert (memory["namespace"], memory["metricName"], memory["statistic"],
            memory["threshold"]) == ("DaskPlatform/dev", "WorkerMemoryUsedPercent",
                                     "Average", 85)
    efs = alerting(dev, "monitoring-efs-burst-credits")
    assert (efs["namespace"], efs["metricName"], efs["comparisonOperator"]) == (
        "AWS/EFS", "BurstCreditBalance", "LessThanThreshold")
    assert efs["dimensions"] == {"FileSystemId": one(dev, "FileSystem", "storage-efs").id}
    assert efs["threshold"] == 512 * 2**30


def test_every_threshold_comes_from_the_settings(tuned: StackRun) -> None:
    assert alerting(tuned, "monitoring-worker-cpu")["threshold"] == 90
    assert alerting(tuned, "monitoring-queued-tasks")["threshold"] == 80
    assert alerting(tuned, "monitoring-cluster-start-latency")["threshold"] == 45
    assert alerting(tuned, "monitoring-worker-memory")["threshold"] == 75
    assert alerting(tuned, "monitoring-efs-burst-credits")["threshold"] == 100 * 2**30


def test_webhooks_are_https_subscriptions_of_the_alert_topic(
        dev: StackRun, tuned: StackRun) -> None:
    topic = one(tuned, "Topic", "monitoring-alerts").outputs["arn"]
    hooks = {s.name: s.inputs for s in of_short_type(tuned, "TopicSubscription")
             if s.inputs["protocol"] == "https"}
    assert {name: (h["endpoint"], h["topic"], h["endpointAutoConfirms"])
            for name, h in hooks.items()} == {
        "monitoring-alerts-webhook-pagerduty": (PAGERDUTY, topic, True),
        "monitoring-alerts-webhook-slack": (RELAY, topic, True),
    }
    assert not [s for s in of_short_type(dev, "TopicSubscription")
                if s.inputs["protocol"] != "email"]


def test_the_dashboard_shows_latency_memory_and_efs_credits(dev: StackRun) -> None:
    body = json.loads(one(dev, "Dashboard", "monitoring-dashboard").inputs["dashboardBody"])
    series = [m for w in body["widgets"] for m in w["properties"]["metrics"]]
    assert ["DaskPlatform/dev", "ClusterStartLatencySeconds", {"stat": "p90"}] in series
    assert ["DaskPlatform/dev", "WorkerMemoryUsedPercent", {"stat": "Average"}] in series
    assert ["DaskPlatform/dev", "PoolMemoryReservedPercent"] in series
    assert ["AWS/EFS", "BurstCreditBalance", "FileSystemId",
            one(dev, "FileSystem", "storage-efs").id] in series


def test_raw_drops_notify_an_encrypted_queue_with_a_dead_letter_queue(
        dev: StackRun, tuned: StackRun) -> None:
    for run, prefix, receives, retry in ((dev, "appsflyer/", 3, 600),
                                         (tuned, "drops/appsflyer/", 5, 120)):
        queue = one(run, "Queue", "drops-queue")
        dead = one(run, "Queue", "drops-dead-letters")
        assert queue.inputs["sqsManagedSseEnabled"] and dead.inputs["sqsManagedSseEnabled"]
        assert queue.inputs["visibilityTimeoutSeconds"] == retry
        assert json.loads(queue.inputs["redrivePolicy"]) == {
            "deadLetterTargetArn": dead.outputs["arn"], "maxReceiveCount": receives}
        assert json.loads(dead.inputs["redriveAllowPolicy"]) == {
            "redrivePermission": "byQueue", "sourceQueueArns": [queue.outputs["arn"]]}
        notification = one(run, "BucketNotification", "drops-notification")
        raw = one(run, "Bucket", "storage-raw")
        assert notification.inputs["bucket"] == raw.id
        assert notification.inputs["queues"] == [{
            "queueArn": queue.outputs["arn"], "events": ["s3:ObjectCreated:*"],
            "filterPrefix": prefix}]
    assert dev.outputs["drop_queue_url"].endswith("/dask-platform-dev-raw-drops")


def test_only_the_raw_bucket_of_this_account_may_send_to_the_queue(dev: StackRun) -> None:
    queue = one(dev, "Queue", "drops-queue")
    policy = one(dev, "QueuePolicy", "drops-policy")
    assert policy.inputs["queueUrl"] == queue.outputs["url"]
    allow, deny = json.loads(policy.inputs["policy"])["Statement"]
    assert (allow["Effect"], allow["Principal"], allow["Action"], allow["Resource"]) == (
        "Allow", {"Service": "s3.amazonaws.com"}, "sqs:SendMessage", queue.outputs["arn"])
    assert allow["Condition"]["ArnEquals"] == {
        "aws:SourceArn": one(dev, "Bucket", "storage-raw").outputs["arn"]}
    assert allow["Condition"]["StringEquals"]["aws:SourceAccount"].isdigit()
    assert (deny["Effect"], deny["Condition"]) == (
        "Deny", {"Bool": {"aws:SecureTransport": "false"}})
    # S3 checks that it may send when the notification is created.
    notification = one(dev, "BucketNotification", "drops-notification")
    assert policy.urn in notification.dependencies


def test_saved_queries_cover_the_hosts_logs_and_the_audit_trail(dev: StackRun) -> None:
    errors = one(dev, "QueryDefinition", "monitoring-errors-by-host").inputs
    assert sorted(errors["logGroupNames"]) == [
        f"/dask-platform/dev/{role}" for role in ("gateway", "scheduler", "worker")]
    assert errors["queryString"] == ERRORS_BY_HOST and "by @log, host" in ERRORS_BY_HOST
    activity = one(dev, "QueryDefinition", "monitoring-activity-by-user").inputs
    assert activity["logGroupNames"] == ["/dask-platform/dev/gateway"]
    assert activity["queryString"] == ACTIVITY_BY_USER
    # The audit trail's own fields (daskplatform.audit) and its stream.
    assert "by user, event" in ACTIVITY_BY_USER
    assert "dask-platform-audit\\.log$" in ACTIVITY_BY_USER
    assert (errors["name"], activity["name"]) == ("dask-platform-dev/errors by host",
                                                  "dask-platform-dev/activity by user")


def test_the_watcher_may_only_consume_its_queue(dev: StackRun) -> None:
    consume = statements(dev, "gateway")["ConsumeDropQueue"]
    assert sorted(consume["Action"]) == ["sqs:ChangeMessageVisibility", "sqs:DeleteMessage",
                                         "sqs:ReceiveMessage"]
    assert consume["Resource"] == one(dev, "Queue", "drops-queue").outputs["arn"]
    for role in ("scheduler", "worker"):
        assert not [s for s in statements(dev, role).values()
                    if any(a.startswith("sqs:") for a in
                           ([s["Action"]] if isinstance(s["Action"], str) else s["Action"]))]
    secret = one(dev, "Secret", "identity-pipeline-password")
    assert secret.inputs["name"] == "dask-platform/dev/pipeline-password"
    assert secret.id not in {v.inputs["secretId"] for v in of_short_type(dev, "SecretVersion")}


def test_the_gateway_host_runs_the_watcher_on_this_stacks_queue_and_buckets(
        dev: StackRun) -> None:
    import shlex

    from tests.cloud.host_units import directives, host_units
    from tests.cloud.test_hosts import published_settings, user_data

    units = {u.name: u for u in host_units(user_data(dev, "gateway-lt"),
                                           published_settings(dev))}
    watcher = directives(units["dask-platform-pipeline.service"].render())
    argv = shlex.split(watcher["ExecStart"][0])
    assert argv[1:3] == ["pipeline", "watch"]
    options = dict(zip(argv[3::2], argv[4::2]))

    def bucket(kind: str) -> str:
        return one(dev, "Bucket", f"storage-{kind}").outputs["bucket"]

    assert options == {
        "--settings": "ssm:///dask-platform/dev/runtime-settings",
        "--queue-url": one(dev, "Queue", "drops-queue").outputs["url"],
        "--raw-bucket": bucket("raw"), "--processed-bucket": bucket("processed"),
        "--audit-bucket": bucket("audit"),
        "--gateway-url": "http://127.0.0.1:8000/services/dask-gateway",
        "--proxy-address": "gateway://127.0.0.1:8786",
        "--password-secret": "dask-platform/dev/pipeline-password",
        "--alert-topic-arn": one(dev, "Topic", "monitoring-alerts").outputs["arn"],
    }
