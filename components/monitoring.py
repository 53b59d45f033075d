"""Monitoring: who is told (SNS e-mail), about what (alarms), where to look (dashboard),
and where host logs go (one log group per host role, kept 90 days).

The platform metrics come from the gateway (``daskplatform.settings.*_METRIC`` in the
stack's namespace); CPU and target health come from AWS.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import pulumi
import pulumi_aws as aws

from components.identity import HOST_ROLES
from daskplatform.host.userdata import BOOT_FAILURES_METRIC
from daskplatform.settings import (
    ACTIVE_CLUSTERS_METRIC,
    ACTIVE_WORKERS_METRIC,
    PENDING_WORKERS_METRIC,
    QUEUED_TASKS_METRIC,
)

LOG_RETENTION_DAYS = 90
WORKER_CPU_ALARM = 85
QUEUED_TASKS_ALARM = 50
PERIOD_SECONDS = 60


class Monitoring(pulumi.ComponentResource):
    topic: aws.sns.Topic
    dashboard: aws.cloudwatch.Dashboard
    log_groups: dict[str, aws.cloudwatch.LogGroup]

    def __init__(
        self,
        name: str,
        *,
        dashboard_name: str,
        topic_name: str,
        alert_emails: Sequence[str],
        region: pulumi.Input[str],
        log_group_prefix: str,
        metrics_namespace: str,
        worker_asg_name: pulumi.Input[str],
        alb_arn_suffix: pulumi.Input[str],
        target_group_arn_suffix: pulumi.Input[str],
        tags: Mapping[str, str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("daskplatform:aws:Monitoring", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        tags = dict(tags)
        self.log_groups = {
            role: aws.cloudwatch.LogGroup(
                f"{name}-{role}-logs",
                name=f"{log_group_prefix}{role}",
                retention_in_days=LOG_RETENTION_DAYS,
                tags=tags,
                opts=child,
            )
            for role in HOST_ROLES
        }
        # Named, so the gateway host knows its ARN before the topic exists (no cycle).
        self.topic = aws.sns.Topic(f"{name}-alerts", name=topic_name, tags=tags, opts=child)
        for index, email in enumerate(alert_emails):
            aws.sns.TopicSubscription(
                f"{name}-alerts-email-{index}",
                topic=self.topic.arn,
                protocol="email",
                endpoint=email,
                opts=child,
            )
        notify = {
            "alarm_actions": [self.topic.arn],
            "ok_actions": [self.topic.arn],
            "tags": tags,
            "opts": child,
        }

        def platform(metric: str, stat: str = "Maximum") -> dict:
            return {
                "metric": {
                    "namespace": metrics_namespace,
                    "metric_name": metric,
                    "stat": stat,
                    "period": PERIOD_SECONDS,
                }
            }

        aws.cloudwatch.MetricAlarm(
            f"{name}-no-active-workers",
            comparison_operator="GreaterThanThreshold",
            threshold=0,
            evaluation_periods=5,
            treat_missing_data="notBreaching",
            alarm_description="Clusters exist but no Dask worker is running",
            metric_queries=[
                {"id": "clusters", **platform(ACTIVE_CLUSTERS_METRIC)},
                {"id": "workers", **platform(ACTIVE_WORKERS_METRIC)},
                {
                    "id": "stranded",
                    "expression": "IF(clusters > 0 AND workers == 0, 1, 0)",
                    "label": "clusters without workers",
                    "return_data": True,
                },
            ],
            **notify,
        )
        for role in HOST_ROLES:
            aws.cloudwatch.MetricAlarm(
                f"{name}-{role}-boot-failures",
                namespace=metrics_namespace,
                metric_name=BOOT_FAILURES_METRIC,
                dimensions={"Role": role},  # as the user data stub puts it
                statistic="Sum",
                comparison_operator="GreaterThanThreshold",
                threshold=0,
                period=PERIOD_SECONDS,
                evaluation_periods=1,
                treat_missing_data="notBreaching",
                alarm_description=f"A {role} host's boot failed: its boot log is in the "
                f"{log_group_prefix}{role} log group",
                **notify,
            )
        aws.cloudwatch.MetricAlarm(
            f"{name}-worker-cpu",
            namespace="AWS/EC2",
            metric_name="CPUUtilization",
            statistic="Average",
            dimensions={"AutoScalingGroupName": worker_asg_name},
            comparison_operator="GreaterThanThreshold",
            threshold=WORKER_CPU_ALARM,
            period=PERIOD_SECONDS,
            evaluation_periods=10,
            alarm_description=f"Worker pool CPU above {WORKER_CPU_ALARM} % for 10 minutes",
            **notify,
        )
        aws.cloudwatch.MetricAlarm(
            f"{name}-queued-tasks",
            namespace=metrics_namespace,
            metric_name=QUEUED_TASKS_METRIC,
            statistic="Maximum",
            comparison_operator="GreaterThanThreshold",
            threshold=QUEUED_TASKS_ALARM,
            period=PERIOD_SECONDS,
            evaluation_periods=5,
            treat_missing_data="notBreaching",
            alarm_description=f"More than {QUEUED_TASKS_ALARM} tasks queued",
            **notify,
        )
        aws.cloudwatch.MetricAlarm(
            f"{name}-gateway-unhealthy",
            namespace="AWS/ApplicationELB",
            metric_name="UnHealthyHostCount",
            statistic="Maximum",
            dimensions={"LoadBalancer": alb_arn_suffix, "TargetGroup": target_group_arn_suffix},
            comparison_operator="GreaterThanOrEqualToThreshold",
            threshold=1,
            period=PERIOD_SECONDS,
            evaluation_periods=3,
            treat_missing_data="breaching",
            alarm_description="The gateway target behind the ALB is unhealthy",
            **notify,
        )
        self.dashboard = aws.cloudwatch.Dashboard(
            f"{name}-dashboard",
            dashboard_name=dashboard_name,
            opts=child,
            dashboard_body=pulumi.Output.all(region, worker_asg_name, alb_arn_suffix).apply(
                lambda v: _dashboard(v[0], v[1], v[2], metrics_namespace)
            ),
        )
        self.register_outputs(
            {"alert_topic_arn": self.topic.arn, "dashboard_name": self.dashboard.dashboard_name}
        )


def _dashboard(region: str, asg_name: str, alb: str, namespace: str) -> str:
    def widget(title: str, metrics: list[list[str]], stat: str = "Maximum") -> dict:
        return {
            "type": "metric",
            "width": 12,
            "height": 6,
            "properties": {
                "title": title,
                "region": region,
                "stat": stat,
                "period": PERIOD_SECONDS,
                "metrics": metrics,
            },
        }

    return json.dumps(
        {
            "widgets": [
                widget(
                    "Clusters and workers",
                    [[namespace, ACTIVE_CLUSTERS_METRIC], [namespace, ACTIVE_WORKERS_METRIC]],
                ),
                widget(
                    "Pending workers and queued tasks",
                    [
                        [namespace, PENDING_WORKERS_METRIC, "AutoScalingGroupName", asg_name],
                        [namespace, QUEUED_TASKS_METRIC],
                    ],
                ),
                widget(
                    "Worker pool CPU %",
                    [["AWS/EC2", "CPUUtilization", "AutoScalingGroupName", asg_name]],
                    stat="Average",
                ),
                widget(
                    "Worker nodes in service",
                    [
                        [
                            "AWS/AutoScaling",
                            "GroupInServiceInstances",
                            "AutoScalingGroupName",
                            asg_name,
                        ]
                    ],
                ),
                widget(
                    "Gateway requests and 5xx",
                    [
                        ["AWS/ApplicationELB", "RequestCount", "LoadBalancer", alb],
                        ["AWS/ApplicationELB", "HTTPCode_Target_5XX_Count", "LoadBalancer", alb],
                    ],
                    stat="Sum",
                ),
            ]
        }
    )
