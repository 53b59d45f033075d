"""Logs an incident review needs: VPC flow logs, ALB access logs, and log groups
that keep (and eventually drop) what they collect."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from policies.model import StackResource, is_true, of_types, refers_to

VPC = "aws:ec2/vpc:Vpc"
FLOW_LOG = "aws:ec2/flowLog:FlowLog"
LOAD_BALANCER_TYPES = ("aws:lb/loadBalancer:LoadBalancer", "aws:alb/loadBalancer:LoadBalancer")
LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"


def check_flow_logs(resources: Sequence[StackResource],
                    config: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Every VPC the stack creates has a flow log (an adopted VPC is its owner's)."""
    flow_logs = of_types(resources, (FLOW_LOG,))
    return [
        (vpc.name, ("VPC has no flow log; add an ec2.FlowLog with vpcId set to it "
                   "(trafficType ALL, to CloudWatch Logs or S3)"))
        for vpc in of_types(resources, (VPC,))
        if not any(refers_to(log, "vpcId", vpc) for log in flow_logs)
    ]


def check_alb_access_logs(resource_type: str, name: str, props: Mapping[str, Any],
                          config: Mapping[str, Any]) -> list[str]:
    if resource_type not in LOAD_BALANCER_TYPES:
        return []
    if (props.get("loadBalancerType") or "application") != "application":
        return []
    logs = props.get("accessLogs") or {}
    if is_true(logs.get("enabled")) and logs.get("bucket"):
        return []
    return [("ALB access logs are off; set accessLogs={'bucket': <audit bucket>, "
            "'enabled': True}")]


def check_log_group_retention(resource_type: str, name: str, props: Mapping[str, Any],
                              config: Mapping[str, Any]) -> list[str]:
    """Without a retention, CloudWatch keeps logs (and bills for them) forever."""
    if resource_type != LOG_GROUP or props.get("retentionInDays"):
        return []
    return ["log group has no retention; set retentionInDays (e.g. 30, 90 or 365)"]
