"""WorkerPool: the Auto Scaling group of worker nodes and its scaling rules.

Step scaling on the group's average CPU: one node more above ``scaleOutCpu`` for three
minutes, one less below ``scaleInCpu`` for ``cooldownSeconds``; and one node more while
the gateway reports worker requests waiting for room (``PendingWorkers`` > 0).
Scale-in never kills user work: the gateway's pool backend protects every node that
runs a Dask process from scale-in, so only empty nodes can be removed, and an instance
refresh waits for protected nodes instead of replacing them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pulumi
import pulumi_aws as aws

from components.host import launch_template
from daskplatform.settings import PENDING_WORKERS_METRIC, PlatformSettings
from daskplatform.stack_names import WORKER_BOOT_HOOK

METRIC_PERIOD_SECONDS = 60
SCALE_OUT_PERIODS = 3
BOOT_TIMEOUT_SECONDS = 1200
"""How long a launching node may take to boot (install, mount, agent serving) before the
group abandons it; host-setup's own wait for the agent is shorter (900 s)."""
WAIT_FOR_CAPACITY = "30m"
"""How long `pulumi up` waits for the group's minimum of booted nodes."""


class WorkerPool(pulumi.ComponentResource):
    group: aws.autoscaling.Group
    scale_out_policy: aws.autoscaling.Policy
    scale_in_policy: aws.autoscaling.Policy
    pending_policy: aws.autoscaling.Policy

    def __init__(
        self,
        name: str,
        settings: PlatformSettings,
        *,
        asg_name: str,
        subnet_ids: Sequence[pulumi.Input[str]],
        security_group_id: pulumi.Input[str],
        instance_profile_arn: pulumi.Input[str],
        user_data: pulumi.Output[str],
        metrics_namespace: str,
        tags: Mapping[str, str],
        depends_on: Sequence[pulumi.Resource] = (),
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("daskplatform:aws:WorkerPool", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        workers = settings.workers
        template = launch_template(
            f"{name}-lt",
            role="worker",
            instance_type=workers.instance_type,
            user_data=user_data,
            security_group_id=security_group_id,
            instance_profile_arn=instance_profile_arn,
            tags=tags,
            parent=self,
        )
        self.group = aws.autoscaling.Group(
            f"{name}-asg",
            name=asg_name,
            min_size=workers.min,
            max_size=workers.max,
            vpc_zone_identifiers=list(subnet_ids),
            default_cooldown=workers.cooldown_seconds,
            health_check_type="EC2",
            health_check_grace_period=300,
            launch_template={"id": template.id, "version": template.latest_version.apply(str)},
            enabled_metrics=["GroupInServiceInstances", "GroupDesiredCapacity", "GroupMaxSize"],
            # A node is InService only once host-setup completes this hook (its agent
            # serves); a failed boot abandons it and the group starts another. `pulumi up`
            # waits for min_size booted nodes and fails if they never come.
            initial_lifecycle_hooks=[
                {
                    "name": WORKER_BOOT_HOOK,
                    "lifecycle_transition": "autoscaling:EC2_INSTANCE_LAUNCHING",
                    "default_result": "ABANDON",
                    "heartbeat_timeout": BOOT_TIMEOUT_SECONDS,
                }
            ],
            wait_for_capacity_timeout=WAIT_FOR_CAPACITY,
            instance_refresh={
                "strategy": "Rolling",
                "preferences": {
                    "min_healthy_percentage": 90,
                    "scale_in_protected_instances": "Wait",
                },
            },
            tags=[
                {"key": key, "value": value, "propagate_at_launch": False}
                for key, value in tags.items()
            ],
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(depends_on)),
        )

        def step_policy(
            suffix: str, adjustment: int, lower: float | None, upper: float | None
        ) -> aws.autoscaling.Policy:
            return aws.autoscaling.Policy(
                f"{name}-{suffix}",
                autoscaling_group_name=self.group.name,
                policy_type="StepScaling",
                adjustment_type="ChangeInCapacity",
                estimated_instance_warmup=workers.cooldown_seconds,
                metric_aggregation_type="Average",
                step_adjustments=[
                    {
                        "scaling_adjustment": adjustment,
                        "metric_interval_lower_bound": lower,
                        "metric_interval_upper_bound": upper,
                    }
                ],
                opts=child,
            )

        self.scale_out_policy = step_policy("scale-out-cpu", 1, 0, None)
        self.scale_in_policy = step_policy("scale-in-cpu", -1, None, 0)
        self.pending_policy = step_policy("scale-out-pending", 1, 0, None)
        cpu = {
            "namespace": "AWS/EC2",
            "metric_name": "CPUUtilization",
            "statistic": "Average",
            "dimensions": {"AutoScalingGroupName": self.group.name},
        }
        aws.cloudwatch.MetricAlarm(
            f"{name}-cpu-high",
            **cpu,
            comparison_operator="GreaterThanThreshold",
            threshold=workers.scale_out_cpu,
            period=METRIC_PERIOD_SECONDS,
            evaluation_periods=SCALE_OUT_PERIODS,
            alarm_actions=[self.scale_out_policy.arn],
            alarm_description=f"Add a worker node: average CPU > {workers.scale_out_cpu:g} %",
            tags=dict(tags),
            opts=child,
        )
        aws.cloudwatch.MetricAlarm(
            f"{name}-cpu-low",
            **cpu,
            comparison_operator="LessThanThreshold",
            threshold=workers.scale_in_cpu,
            period=METRIC_PERIOD_SECONDS,
            evaluation_periods=workers.cooldown_seconds // METRIC_PERIOD_SECONDS,
            alarm_actions=[self.scale_in_policy.arn],
            alarm_description=(
                f"Remove an empty worker node: average CPU < "
                f"{workers.scale_in_cpu:g} % (busy nodes are scale-in protected)"
            ),
            tags=dict(tags),
            opts=child,
        )
        aws.cloudwatch.MetricAlarm(
            f"{name}-pending-workers",
            namespace=metrics_namespace,
            metric_name=PENDING_WORKERS_METRIC,
            dimensions={"AutoScalingGroupName": asg_name},  # as the gateway publishes it
            statistic="Maximum",
            comparison_operator="GreaterThanThreshold",
            threshold=0,
            period=METRIC_PERIOD_SECONDS,
            evaluation_periods=1,
            treat_missing_data="notBreaching",
            alarm_actions=[self.pending_policy.arn],
            alarm_description="Add a worker node: worker requests are waiting for room in the pool",
            tags=dict(tags),
            opts=child,
        )
        self.register_outputs({"asg_name": self.group.name, "asg_arn": self.group.arn})
