"""The worker Auto Scaling group: sane bounds under a cost ceiling, and CPU alarms
that actually drive scaling policies both ways."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from policies.model import ConfigOption, StackResource, as_int, of_types, refers_to

GROUP = "aws:autoscaling/group:Group"
SCALING_POLICY = "aws:autoscaling/policy:Policy"
METRIC_ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"

BOUNDS_OPTIONS = {
    "maxSizeCeiling": ConfigOption(20, "integer",
                                   "No Auto Scaling group may have maxSize above this (cost)."),
}


def check_asg_bounds(resource_type: str, name: str, props: Mapping[str, Any],
                     config: Mapping[str, Any]) -> list[str]:
    """min <= desired <= max <= ceiling."""
    if resource_type != GROUP:
        return []
    low, high = as_int(props.get("minSize")), as_int(props.get("maxSize"))
    ceiling = int(config["maxSizeCeiling"])
    messages = []
    if low > high:
        messages.append(f"minSize {low} is above maxSize {high}; set minSize <= maxSize")
    desired = props.get("desiredCapacity")
    if desired is not None and not low <= as_int(desired) <= high:
        messages.append(f"desiredCapacity {as_int(desired)} is outside minSize..maxSize "
                        f"{low}..{high}; set it within, or leave it unset")
    if high > ceiling:
        messages.append(f"maxSize {high} is above the ceiling {ceiling}; lower maxSize "
                        "(dask-platform:workers.max) or raise the policy's maxSizeCeiling")
    return messages


def _is_cpu(metric: Mapping[str, Any]) -> bool:
    return metric.get("metricName") == "CPUUtilization" and metric.get("namespace") == "AWS/EC2"


def _cpu_alarm_direction(alarm: StackResource) -> str | None:
    """'out' for a high-CPU alarm, 'in' for a low-CPU one, None if not about CPU. A
    metric-math alarm is about CPU when its expression compares a CPU query: ``cpu <``
    gates a scale-in (e.g. ``IF(cpu < 30, idle, 0)``), ``cpu >`` a scale-out."""
    props = alarm.props
    queries = props.get("metricQueries") or []
    if queries:
        cpu_ids = [q["id"] for q in queries if _is_cpu(q.get("metric") or {})]
        for query in queries:
            expression = str(query.get("expression") or "").replace(" ", "")
            for cpu_id in cpu_ids:
                if f"{cpu_id}<" in expression:
                    return "in"
                if f"{cpu_id}>" in expression:
                    return "out"
        return None
    if not _is_cpu(props):
        return None
    operator = str(props.get("comparisonOperator") or "")
    if operator.startswith("GreaterThan"):
        return "out"
    if operator.startswith("LessThan"):
        return "in"
    return None


def check_cpu_scaling_alarms(resources: Sequence[StackResource],
                             config: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Each group needs a scale-out and a scale-in CPU alarm whose action is one of
    its scaling policies; an alarm that notifies no policy scales nothing."""
    violations = []
    alarms = of_types(resources, (METRIC_ALARM,))
    for group in of_types(resources, (GROUP,)):
        policies = [p for p in of_types(resources, (SCALING_POLICY,))
                    if refers_to(p, "autoscalingGroupName", group)]
        wired = {
            _cpu_alarm_direction(alarm) for alarm in alarms
            if any(refers_to(alarm, "alarmActions", policy) for policy in policies)
        }
        for direction, threshold in (("out", "above"), ("in", "below")):
            if direction not in wired:
                violations.append((group.name, (
                    f"no CPU scale-{direction} alarm drives this group; add a "
                    f"cloudwatch.MetricAlarm on AWS/EC2 CPUUtilization {threshold} the "
                    f"threshold whose alarmActions is an autoscaling.Policy of this group")))
    return violations
