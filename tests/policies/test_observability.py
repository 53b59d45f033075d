"""Flow logs, ALB access logs and log-group retention."""

from __future__ import annotations

from policies.model import StackResource
from policies.observability import FLOW_LOG, LOG_GROUP, VPC
from tests.policies.support import run, run_stack

LB = "aws:lb/loadBalancer:LoadBalancer"


def test_vpc_with_flow_log_passes_and_without_fails() -> None:
    vpc = StackResource(VPC, "platform-vpc", {"cidrBlock": "10.0.0.0/16"},
                        identifiers=frozenset({"vpc-1"}))
    log = StackResource(FLOW_LOG, "platform-flow-log", {"vpcId": "vpc-1", "trafficType": "ALL"})
    other = StackResource(FLOW_LOG, "other", {"vpcId": "vpc-2"})
    assert run_stack("vpc-flow-logs", [vpc, log]) == []
    assert run_stack("vpc-flow-logs", [vpc, other]) == [
        ("platform-vpc", ("VPC has no flow log; add an ec2.FlowLog with vpcId set to it "
                         "(trafficType ALL, to CloudWatch Logs or S3)"))]


def test_adopted_vpc_is_not_checked() -> None:
    assert run_stack("vpc-flow-logs", []) == []


def test_alb_access_logs() -> None:
    assert run("alb-access-logs", LB, {"accessLogs": {"bucket": "audit", "enabled": True}}) == []
    expected = [("ALB access logs are off; set accessLogs={'bucket': <audit bucket>, "
                "'enabled': True}")]
    assert run("alb-access-logs", LB, {}) == expected
    assert run("alb-access-logs", "aws:alb/loadBalancer:LoadBalancer",
               {"accessLogs": {"bucket": "audit", "enabled": False}}) == expected
    assert run("alb-access-logs", LB, {"loadBalancerType": "network"}) == []


def test_log_group_retention() -> None:
    assert run("log-group-retention", LOG_GROUP, {"retentionInDays": 30.0}) == []
    assert run("log-group-retention", LOG_GROUP, {"name": "/dask/gateway"}) == [
        "log group has no retention; set retentionInDays (e.g. 30, 90 or 365)"]
