"""WorkerPool: the Auto Scaling group of worker nodes and its scaling rules
(docs/capacity.md).

Three step policies: one node more while the group's average CPU is above
``scaleOutCpu`` for three minutes (the brief's baseline); as many nodes as the gateway's
``BacklogNodes`` says the waiting workers need, all at once (up to 20 per minute and
never past ``workers.max``); and as many fewer as ``IdleNodes`` counts while CPU is below
``scaleInCpu`` for ``cooldownSeconds``. Scale-in never kills user work: the gateway
protects every node that runs a Dask process, and scale-in asks only for the idle ones,
so AWS never lowers the desired capacity below the busy nodes (which would terminate the
next node to empty at once). Running nodes move to a new runtime through
``dask-platform rollout`` (drained, then upgraded in place once empty), not an instance
refresh.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pulumi
import pulumi_aws as aws

from components.host import launch_template
from daskplatform.scaling import backlog_steps, idle_steps
from daskplatform.settings import BACKLOG_NODES_METRIC, IDLE_NODES_METRIC, PlatformSettings
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
    backlog_policy: aws.autoscaling.Policy
    scale_in_policy: aws.autoscaling.Policy

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
            # Pre-initialised, stopped nodes: a scale-out starts one and its agent joins
            # (host-setup runs at every boot and completes the launch hook again).
            warm_pool=(
                {"pool_state": "Stopped", "min_size": workers.warm_pool_min,
                 "instance_reuse_policy": {"reuse_on_scale_in": True}}
                if workers.warm_pool_min else None
            ),
            # No instance refresh: it would wait on busy (protected) nodes for at most an
            # hour, then fail after `pulumi up` reported success. A new template version
            # (a new runtime, AMI or type) reaches new nodes at once; running nodes are
            # drained and upgraded by `dask-platform rollout`, which never stops work.
            tags=[
                {"key": key, "value": value, "propagate_at_launch": False}
                for key, value in tags.items()
            ],
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(depends_on)),
        )

        def step_policy(suffix: str, steps: list[tuple[float, float | None, int]],
                        aggregation: str = "Maximum") -> aws.autoscaling.Policy:
            return aws.autoscaling.Policy(
                f"{name}-{suffix}",
                autoscaling_group_name=self.group.name,
                policy_type="StepScaling",
                adjustment_type="ChangeInCapacity",
                estimated_instance_warmup=workers.cooldown_seconds,
                metric_aggregation_type=aggregation,
                step_adjustments=[
                    {"scaling_adjustment": adjustment, "metric_interval_lower_bound": lower,
                     "metric_interval_upper_bound": upper}
                    for lower, upper, adjustment in steps
                ],
                opts=child,
            )

        # Baseline: one node more while the pool is busy.
        self.scale_out_policy = step_policy("scale-out-cpu", [(0, None, 1)], "Average")
        # As many nodes as the waiting workers need, at once (daskplatform.scaling).
        self.backlog_policy = step_policy("scale-out-backlog", backlog_steps(workers.max))
        # Only idle nodes, and only while the pool's CPU is low.
        self.scale_in_policy = step_policy("scale-in-idle", idle_steps(workers.max))
        pool = {"AutoScalingGroupName": asg_name}  # as the gateway publishes its figures
        aws.cloudwatch.MetricAlarm(
            f"{name}-cpu-high",
            namespace="AWS/EC2",
            metric_name="CPUUtilization",
            statistic="Average",
            dimensions={"AutoScalingGroupName": self.group.name},
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
            f"{name}-backlog",
            namespace=metrics_namespace,
            metric_name=BACKLOG_NODES_METRIC,
            dimensions=pool,
            statistic="Maximum",
            comparison_operator="GreaterThanThreshold",
            threshold=0.5,
            period=METRIC_PERIOD_SECONDS,
            evaluation_periods=1,
            treat_missing_data="notBreaching",
            alarm_actions=[self.backlog_policy.arn],
            alarm_description="Add the worker nodes waiting workers need (BacklogNodes), "
            "all at once",
            tags=dict(tags),
            opts=child,
        )
        aws.cloudwatch.MetricAlarm(
            f"{name}-cpu-low",
            comparison_operator="GreaterThanThreshold",
            threshold=0.5,
            evaluation_periods=workers.cooldown_seconds // METRIC_PERIOD_SECONDS,
            treat_missing_data="notBreaching",
            alarm_actions=[self.scale_in_policy.arn],
            alarm_description=(
                f"Remove idle worker nodes (no Dask process, so not protected) while "
                f"average CPU < {workers.scale_in_cpu:g} %: never lowers the group below "
                "its busy nodes"),
            metric_queries=[
                {"id": "cpu", "metric": {"namespace": "AWS/EC2", "metric_name": "CPUUtilization",
                                         "dimensions": {"AutoScalingGroupName": self.group.name},
                                         "stat": "Average", "period": METRIC_PERIOD_SECONDS}},
                {"id": "idle", "metric": {"namespace": metrics_namespace,
                                          "metric_name": IDLE_NODES_METRIC, "dimensions": pool,
                                          "stat": "Minimum", "period": METRIC_PERIOD_SECONDS}},
                {"id": "removable", "expression": f"IF(cpu < {workers.scale_in_cpu:g}, idle, 0)",
                 "label": "idle nodes while CPU is low", "return_data": True},
            ],
            tags=dict(tags),
            opts=child,
        )
        self.register_outputs({"asg_name": self.group.name, "asg_arn": self.group.arn})
