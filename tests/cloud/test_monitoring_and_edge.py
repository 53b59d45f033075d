"""Monitoring alarms and the ALB in front of the gateway; the stack outputs."""

from __future__ import annotations

import json

from tests.cloud.conftest import ADOPTED_PUBLIC, of_short_type, one
from tools.mockrun import StackRun

OUTPUTS = {
    "vpc_id",
    "private_subnet_ids",
    "public_subnet_ids",
    "hub_url",
    "gateway_url",
    "gateway_scheduler_address",
    "raw_bucket_name",
    "raw_bucket_arn",
    "processed_bucket_name",
    "processed_bucket_arn",
    "audit_bucket_name",
    "audit_bucket_arn",
    "artifacts_bucket_name",
    "artifacts_bucket_arn",
    "efs_id",
    "worker_asg_name",
    "alert_topic_arn",
    "dashboard_name",
    "drop_queue_url",
    "settings_parameter_name",
    "client_security_group_id",
}


def alerting(run: StackRun, name: str) -> dict:
    alarm = one(run, "MetricAlarm", name).inputs
    assert alarm["alarmActions"] == [one(run, "Topic", "monitoring-alerts").outputs["arn"]], name
    return alarm


def test_alert_topic_mails_every_address(custom: StackRun) -> None:
    topic = one(custom, "Topic", "monitoring-alerts").outputs["arn"]
    subscriptions = of_short_type(custom, "TopicSubscription")
    assert sorted(s.inputs["endpoint"] for s in subscriptions) == [
        "a@example.internal",
        "b@example.internal",
    ]
    assert all(
        s.inputs["protocol"] == "email" and s.inputs["topic"] == topic for s in subscriptions
    )


def test_alarms_for_cpu_queue_and_unhealthy_gateway(dev: StackRun) -> None:
    cpu = alerting(dev, "monitoring-worker-cpu")
    assert (cpu["metricName"], cpu["comparisonOperator"], cpu["threshold"]) == (
        "CPUUtilization",
        "GreaterThanThreshold",
        85,
    )
    assert cpu["dimensions"] == {"AutoScalingGroupName": "dask-platform-dev-workers"}
    queued = alerting(dev, "monitoring-queued-tasks")
    assert (
        queued["namespace"],
        queued["metricName"],
        queued["comparisonOperator"],
        queued["threshold"],
    ) == ("DaskPlatform/dev", "QueuedTasks", "GreaterThanThreshold", 50)
    unhealthy = alerting(dev, "monitoring-gateway-unhealthy")
    assert unhealthy["metricName"] == "UnHealthyHostCount" and unhealthy["threshold"] == 1
    assert unhealthy["dimensions"] == {
        "LoadBalancer": one(dev, "LoadBalancer", "alb-lb").outputs["arnSuffix"],
        "TargetGroup": one(dev, "TargetGroup", "alb-gateway").outputs["arnSuffix"],
    }


def test_alarm_when_clusters_exist_without_workers(dev: StackRun) -> None:
    alarm = alerting(dev, "monitoring-no-active-workers")
    queries = {q["id"]: q for q in alarm["metricQueries"]}
    assert queries["clusters"]["metric"]["metricName"] == "ActiveClusters"
    assert queries["workers"]["metric"]["metricName"] == "ActiveWorkers"
    assert queries["stranded"]["expression"] == "IF(clusters > 0 AND workers == 0, 1, 0)"
    assert queries["stranded"]["returnData"] is True
    assert (alarm["comparisonOperator"], alarm["threshold"]) == ("GreaterThanThreshold", 0)


def test_host_log_groups_keep_90_days_and_a_dashboard_exists(dev: StackRun) -> None:
    names = {
        g.inputs.get("name"): g.inputs["retentionInDays"] for g in of_short_type(dev, "LogGroup")
    }
    for role in ("gateway", "scheduler", "worker"):
        assert names[f"/dask-platform/dev/{role}"] == 90
    assert all(days == 90 for days in names.values())
    dashboard = one(dev, "Dashboard", "monitoring-dashboard").inputs
    metrics = [m for w in json.loads(dashboard["dashboardBody"])["widgets"]
               for m in w["properties"]["metrics"]]
    # The series the gateway actually puts: PendingWorkers per worker group.
    assert ["DaskPlatform/dev", "PendingWorkers", "AutoScalingGroupName",
            "dask-platform-dev-workers"] in metrics


def test_alb_is_internal_for_private_ranges_public_for_public_ones(
        dev: StackRun, custom: StackRun) -> None:
    """The dev stack's allowedCidrs are the team's private network: an internet-facing ALB
    could never be reached from them. The custom stack lists public ranges."""
    alb = one(dev, "LoadBalancer", "alb-lb")
    private = sorted(
        s.id for s in of_short_type(dev, "Subnet") if s.inputs["tags"]["tier"] == "private"
    )
    assert sorted(alb.inputs["subnets"]) == private and alb.inputs["internal"] is True
    public = one(custom, "LoadBalancer", "alb-lb").inputs
    assert public["internal"] is False and public["subnets"] == ADOPTED_PUBLIC


def test_alb_is_in_two_subnets_https_only_with_tls12_policy(dev: StackRun) -> None:
    alb = one(dev, "LoadBalancer", "alb-lb")
    assert len(alb.inputs["subnets"]) == 2
    assert alb.inputs["accessLogs"] == {
        "bucket": one(dev, "Bucket", "storage-audit").outputs["bucket"],
        "prefix": "alb",
        "enabled": True,
    }
    listeners = {
        int(listener.inputs["port"]): listener.inputs for listener in of_short_type(dev, "Listener")
    }
    assert set(listeners) == {443, 80}
    https = listeners[443]
    assert (
        https["protocol"] == "HTTPS" and https["sslPolicy"] == "ELBSecurityPolicy-TLS13-1-2-2021-06"
    )
    assert https["certificateArn"].startswith("arn:aws:acm:")
    target_group = one(dev, "TargetGroup", "alb-gateway")
    assert https["defaultActions"] == [
        {"type": "forward", "targetGroupArn": target_group.outputs["arn"]}
    ]
    redirect = listeners[80]["defaultActions"][0]
    assert redirect["type"] == "redirect"
    assert (redirect["redirect"]["protocol"], redirect["redirect"]["port"]) == ("HTTPS", "443")


def test_gateway_is_the_target_on_8000_with_a_health_check(dev: StackRun) -> None:
    target_group = one(dev, "TargetGroup", "alb-gateway").inputs
    assert (target_group["port"], target_group["protocol"]) == (8000, "HTTP")
    assert target_group["healthCheck"]["enabled"] is True and target_group["healthCheck"]["path"]
    attachment = one(dev, "TargetGroupAttachment", "alb-gateway-instance").inputs
    assert attachment["targetId"] == one(dev, "Instance", "gateway-instance").id


def test_every_documented_output_exists_and_points_at_the_right_resource(dev: StackRun) -> None:
    outputs = dev.outputs
    assert set(outputs) == OUTPUTS
    alb_url = "https://" + one(dev, "LoadBalancer", "alb-lb").outputs["dnsName"]
    assert outputs["hub_url"] == alb_url
    assert outputs["gateway_url"] == alb_url + "/services/dask-gateway"
    gateway_ip = one(dev, "Instance", "gateway-instance").outputs["privateIp"]
    assert outputs["gateway_scheduler_address"] == f"gateway://{gateway_ip}:8786"
    for kind in ("raw", "processed", "audit", "artifacts"):
        bucket = one(dev, "Bucket", f"storage-{kind}").outputs
        assert (outputs[f"{kind}_bucket_name"], outputs[f"{kind}_bucket_arn"]) == (
            bucket["bucket"],
            bucket["arn"],
        )
    assert outputs["vpc_id"] == one(dev, "Vpc", "network-vpc").id
    assert outputs["efs_id"] == one(dev, "FileSystem", "storage-efs").id
    assert outputs["worker_asg_name"] == "dask-platform-dev-workers"
    assert outputs["alert_topic_arn"] == one(dev, "Topic", "monitoring-alerts").outputs["arn"]
    assert outputs["dashboard_name"] == "dask-platform-dev"
    assert outputs["drop_queue_url"] == one(dev, "Queue", "drops-queue").outputs["url"]
    assert outputs["settings_parameter_name"] == "/dask-platform/dev/runtime-settings"
    assert outputs["client_security_group_id"] == one(dev, "SecurityGroup", "security-client").id
