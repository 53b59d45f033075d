"""Auto Scaling bounds and the CPU alarms that drive scaling."""

from __future__ import annotations

from policies.model import StackResource
from policies.scaling import GROUP, METRIC_ALARM, SCALING_POLICY
from tests.policies.support import run, run_stack


def test_bounds_pass() -> None:
    props = {"minSize": 5.0, "maxSize": 20.0, "desiredCapacity": 5.0}
    assert run("asg-size-bounds", GROUP, props) == []
    assert run("asg-size-bounds", GROUP, {"minSize": 0.0, "maxSize": 3.0}) == []


def test_bounds_fail() -> None:
    assert run("asg-size-bounds", GROUP, {"minSize": 6.0, "maxSize": 4.0}) == [
        "minSize 6 is above maxSize 4; set minSize <= maxSize"]
    assert run("asg-size-bounds", GROUP, {"minSize": 5.0, "maxSize": 20.0,
                                          "desiredCapacity": 21.0}) == [
        "desiredCapacity 21 is outside minSize..maxSize 5..20; set it within, or leave it unset"]
    assert run("asg-size-bounds", GROUP, {"minSize": 5.0, "maxSize": 30.0}) == [
        ("maxSize 30 is above the ceiling 20; lower maxSize (dask-platform:workers.max) or raise "
        "the policy's maxSizeCeiling")]


def test_ceiling_is_configurable() -> None:
    props = {"minSize": 5.0, "maxSize": 30.0}
    assert run("asg-size-bounds", GROUP, props, config={"maxSizeCeiling": 40}) == []


def group() -> StackResource:
    return StackResource(GROUP, "workers", {"minSize": 5.0, "maxSize": 20.0},
                         identifiers=frozenset({"workers-asg"}))


def policy(name: str) -> StackResource:
    return StackResource(SCALING_POLICY, name, {"autoscalingGroupName": "workers-asg"},
                         identifiers=frozenset({f"arn:policy/{name}"}))


def alarm(name: str, operator: str, actions: list[str], metric: str = "CPUUtilization"
          ) -> StackResource:
    return StackResource(METRIC_ALARM, name, {
        "metricName": metric, "namespace": "AWS/EC2", "comparisonOperator": operator,
        "threshold": 70.0, "alarmActions": actions})


WIRED = [group(), policy("out"), policy("in"),
         alarm("cpu-high", "GreaterThanThreshold", ["arn:policy/out"]),
         alarm("cpu-low", "LessThanThreshold", ["arn:policy/in"])]


def test_wired_alarms_pass() -> None:
    assert run_stack("asg-cpu-scaling-alarms", WIRED) == []


def test_missing_scale_in_alarm_fails() -> None:
    assert run_stack("asg-cpu-scaling-alarms", WIRED[:4]) == [
        ("workers", ("no CPU scale-in alarm drives this group; add a cloudwatch.MetricAlarm on "
                    "AWS/EC2 CPUUtilization below the threshold whose alarmActions is an "
                    "autoscaling.Policy of this group"))]


def test_alarm_that_only_notifies_does_not_count() -> None:
    resources = WIRED[:3] + [alarm("cpu-high", "GreaterThanThreshold", ["arn:sns/ops"]),
                             WIRED[4]]
    [(_name, message)] = run_stack("asg-cpu-scaling-alarms", resources)
    assert message.startswith("no CPU scale-out alarm drives this group")


def test_policy_of_another_group_does_not_count() -> None:
    stray = StackResource(SCALING_POLICY, "out", {"autoscalingGroupName": "other"},
                          identifiers=frozenset({"arn:policy/out"}))
    resources = [group(), stray, policy("in"), *WIRED[3:]]
    assert [m.split(" alarm")[0] for _, m in run_stack("asg-cpu-scaling-alarms", resources)] == [
        "no CPU scale-out"]


def test_non_cpu_alarm_does_not_count() -> None:
    resources = WIRED[:3] + [alarm("pending", "GreaterThanThreshold", ["arn:policy/out"],
                                   metric="PendingWorkers"), WIRED[4]]
    assert len(run_stack("asg-cpu-scaling-alarms", resources)) == 1


def test_wiring_by_dependency_in_preview() -> None:
    out = StackResource(SCALING_POLICY, "out", {},
                        property_dependencies={"autoscalingGroupName": frozenset({"workers"})})
    high = StackResource(METRIC_ALARM, "cpu-high", {
        "metricName": "CPUUtilization", "namespace": "AWS/EC2",
        "comparisonOperator": "GreaterThanOrEqualToThreshold"},
        property_dependencies={"alarmActions": frozenset({"out"})})
    [(_, message)] = run_stack("asg-cpu-scaling-alarms", [group(), out, high])
    assert message.startswith("no CPU scale-in alarm")


def math_alarm(expression: str, actions: list[str]) -> StackResource:
    """A metric-math alarm over the group's CPU and the gateway's IdleNodes."""
    return StackResource(METRIC_ALARM, "cpu-low", {
        "comparisonOperator": "GreaterThanThreshold", "threshold": 0.5, "alarmActions": actions,
        "metricQueries": [
            {"id": "cpu", "metric": {"namespace": "AWS/EC2", "metricName": "CPUUtilization"}},
            {"id": "idle", "metric": {"namespace": "DaskPlatform/dev", "metricName": "IdleNodes"}},
            {"id": "removable", "expression": expression, "returnData": True}]})


def test_scale_in_gated_on_low_cpu_by_metric_math_counts() -> None:
    """The stack removes idle nodes only while CPU is low: IF(cpu < 30, idle, 0)."""
    gated = WIRED[:4] + [math_alarm("IF(cpu < 30, idle, 0)", ["arn:policy/in"])]
    assert run_stack("asg-cpu-scaling-alarms", gated) == []
    ungated = WIRED[:4] + [math_alarm("idle", ["arn:policy/in"])]
    [(_, message)] = run_stack("asg-cpu-scaling-alarms", ungated)
    assert message.startswith("no CPU scale-in alarm")
