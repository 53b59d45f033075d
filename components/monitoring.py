"""Monitoring: who is told (SNS e-mail and HTTPS webhooks), about what (alarms), where to
look (dashboard, saved Logs Insights queries), and where host logs go (one log group per
host role, kept 90 days).

The platform metrics come from the gateway (``daskplatform.settings.*_METRIC`` in the
stack's namespace); CPU, target health and EFS burst credits come from AWS. Thresholds
are settings (``monitoring.*``); docs/monitoring.md says what each alarm means.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import pulumi
import pulumi_aws as aws

from components.identity import HOST_ROLES
from daskplatform.host.userdata import BOOT_FAILURES_METRIC
from daskplatform.host.units import AUDIT_LOG
from daskplatform.settings import (
    ACTIVE_CLUSTERS_METRIC,
    ACTIVE_WORKERS_METRIC,
    CLUSTER_START_METRIC,
    PENDING_WORKERS_METRIC,
    POOL_MEMORY_RESERVED_METRIC,
    QUEUED_TASKS_METRIC,
    WORKER_MEMORY_PERCENT_METRIC,
    MonitoringSettings,
)

LOG_RETENTION_DAYS = 90
PERIOD_SECONDS = 60
LATENCY_PERIOD_SECONDS = 900
"""The latency alarm's window: clusters start a few at a time, so a p90 needs minutes
of them."""
GIB = 2**30
AUDIT_STREAM = AUDIT_LOG.rsplit("/", 1)[-1].replace(".", r"\.")
"""The audit trail's log streams end in its file name (``{instance_id}/<file>``), as a
Logs Insights pattern."""
ERRORS_BY_HOST = rf"""fields @timestamp, @log, @logStream, @message
| filter @logStream not like /{AUDIT_STREAM}$/
| filter @message like /(?i)\b(error|exception|traceback|critical|fatal)\b/
| parse @logStream "*/*" as host, file
| stats count(*) as errors, latest(@message) as last_error by @log, host
| sort errors desc"""
"""Every host role's log group: error lines per log group and instance, with the latest."""
ACTIVITY_BY_USER = rf"""fields @timestamp, user, event, by
| filter @logStream like /{AUDIT_STREAM}$/ and ispresent(event)
| stats count(*) as events, max(@timestamp) as last_at by user, event
| sort user asc, events desc"""
"""The gateway's audit trail (JSON lines, ``daskplatform.audit``): what each user did."""


class Monitoring(pulumi.ComponentResource):
    topic: aws.sns.Topic
    dashboard: aws.cloudwatch.Dashboard
    log_groups: dict[str, aws.cloudwatch.LogGroup]
    queries: dict[str, aws.cloudwatch.QueryDefinition]

    def __init__(
        self,
        name: str,
        *,
        dashboard_name: str,
        topic_name: str,
        alert_emails: Sequence[str],
        settings: MonitoringSettings,
        region: pulumi.Input[str],
        log_group_prefix: str,
        metrics_namespace: str,
        worker_asg_name: pulumi.Input[str],
        alb_arn_suffix: pulumi.Input[str],
        target_group_arn_suffix: pulumi.Input[str],
        file_system_id: pulumi.Input[str],
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
        # PagerDuty's CloudWatch integration URL confirms and reads SNS itself; a Slack
        # incoming webhook needs a relay (docs/monitoring.md).
        for hook in settings.webhooks:
            aws.sns.TopicSubscription(
                f"{name}-alerts-webhook-{hook.name}",
                topic=self.topic.arn,
                protocol="https",
                endpoint=hook.url,
                endpoint_auto_confirms=True,
                confirmation_timeout_in_minutes=5,
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
            threshold=settings.worker_cpu_percent,
            period=PERIOD_SECONDS,
            evaluation_periods=10,
            alarm_description=f"Worker pool CPU above {settings.worker_cpu_percent:g} % for "
            "10 minutes",
            **notify,
        )
        aws.cloudwatch.MetricAlarm(
            f"{name}-queued-tasks",
            namespace=metrics_namespace,
            metric_name=QUEUED_TASKS_METRIC,
            statistic="Maximum",
            comparison_operator="GreaterThanThreshold",
            threshold=settings.queued_tasks,
            period=PERIOD_SECONDS,
            evaluation_periods=5,
            treat_missing_data="notBreaching",
            alarm_description=f"More than {settings.queued_tasks} tasks queued",
            **notify,
        )
        aws.cloudwatch.MetricAlarm(
            f"{name}-cluster-start-latency",
            namespace=metrics_namespace,
            metric_name=CLUSTER_START_METRIC,
            extended_statistic="p90",
            comparison_operator="GreaterThanThreshold",
            threshold=settings.cluster_start_p90_seconds,
            period=LATENCY_PERIOD_SECONDS,
            evaluation_periods=1,
            treat_missing_data="notBreaching",  # no cluster started: nothing was slow
            alarm_description=f"90 % of clusters took longer than "
            f"{settings.cluster_start_p90_seconds:g} s from request to first worker "
            "(15 minutes): is the worker pool scaling out from cold, or at its maximum?",
            **notify,
        )
        aws.cloudwatch.MetricAlarm(
            f"{name}-worker-memory",
            namespace=metrics_namespace,
            metric_name=WORKER_MEMORY_PERCENT_METRIC,
            statistic="Average",
            comparison_operator="GreaterThanThreshold",
            threshold=settings.worker_memory_percent,
            period=PERIOD_SECONDS,
            evaluation_periods=10,
            treat_missing_data="notBreaching",
            alarm_description=f"Dask workers used more than {settings.worker_memory_percent:g}"
            " % of their memory limits on average for 10 minutes: they spill, pause and "
            "restart; see the dashboard's memory widgets",
            **notify,
        )
        aws.cloudwatch.MetricAlarm(
            f"{name}-efs-burst-credits",
            namespace="AWS/EFS",
            metric_name="BurstCreditBalance",
            statistic="Minimum",
            dimensions={"FileSystemId": file_system_id},
            comparison_operator="LessThanThreshold",
            threshold=settings.efs_burst_credit_gib * GIB,
            period=300,
            evaluation_periods=3,
            treat_missing_data="notBreaching",
            alarm_description=f"EFS burst credits below {settings.efs_burst_credit_gib:g} GiB:"
            " homes and shared data fall to baseline throughput when they run out",
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
            dashboard_body=pulumi.Output.all(
                region, worker_asg_name, alb_arn_suffix, file_system_id
            ).apply(lambda v: _dashboard(v[0], v[1], v[2], v[3], metrics_namespace)),
        )
        host_groups = [group.name for group in self.log_groups.values()]
        self.queries = {
            "errors-by-host": aws.cloudwatch.QueryDefinition(
                f"{name}-errors-by-host",
                name=f"{dashboard_name}/errors by host",
                log_group_names=host_groups,
                query_string=ERRORS_BY_HOST,
                opts=child,
            ),
            "activity-by-user": aws.cloudwatch.QueryDefinition(
                f"{name}-activity-by-user",
                name=f"{dashboard_name}/activity by user",
                log_group_names=[self.log_groups["gateway"].name],
                query_string=ACTIVITY_BY_USER,
                opts=child,
            ),
        }
        self.register_outputs(
            {"alert_topic_arn": self.topic.arn, "dashboard_name": self.dashboard.dashboard_name}
        )


def _dashboard(region: str, asg_name: str, alb: str, file_system_id: str,
               namespace: str) -> str:
    def widget(title: str, metrics: list[list], stat: str = "Maximum") -> dict:
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
                widget(
                    "Cluster start latency (s): request to first worker, p50 and p90",
                    [[namespace, CLUSTER_START_METRIC, {"stat": "p50"}],
                     [namespace, CLUSTER_START_METRIC, {"stat": "p90"}]],
                ),
                widget(
                    "Memory %: workers' use of their limits (average, fullest), pool reserved",
                    [[namespace, WORKER_MEMORY_PERCENT_METRIC, {"stat": "Average"}],
                     [namespace, WORKER_MEMORY_PERCENT_METRIC, {"stat": "Maximum"}],
                     [namespace, POOL_MEMORY_RESERVED_METRIC]],
                ),
                widget(
                    "EFS burst credits (bytes)",
                    [["AWS/EFS", "BurstCreditBalance", "FileSystemId", file_system_id]],
                    stat="Minimum",
                ),
            ]
        }
    )
