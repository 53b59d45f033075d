"""The whole dev stack, run under strict Pulumi mocks, passes every mandatory rule;
and breaking any one guarded property of it makes the matching rule fire, so the
clean verdict cannot come from rules that see nothing."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from policies.offline import evaluate, format_violations
from tools.mockrun import run_stack, stack_config

Captured = list[dict[str, Any]]


@pytest.fixture(scope="module")
def dev_stack() -> Captured:
    return [{"type": r.type, "name": r.name, "urn": r.urn, "id": r.id, "outputs": r.outputs,
             "props": r.inputs} for r in run_stack(stack_config("dev")) if r.custom]


def test_dev_stack_has_no_mandatory_violation(dev_stack: Captured) -> None:
    mandatory = [v for v in evaluate(dev_stack) if v.enforcement == "mandatory"]
    assert mandatory == [], "\n" + format_violations(mandatory)


def _one(stack: Captured, type_: str, name_part: str = "") -> dict[str, Any]:
    matches = [r for r in stack if r["type"] == type_ and name_part in r["name"]]
    assert matches, f"the dev stack has no {type_} named *{name_part}*"
    return matches[0]


def _drop(stack: Captured, type_: str, name_part: str) -> None:
    stack.remove(_one(stack, type_, name_part))


def _open_ssh(stack: Captured) -> None:
    group = _one(stack, "aws:ec2/securityGroup:SecurityGroup", "worker")
    group["props"]["ingress"] = [{"protocol": "tcp", "fromPort": 22.0, "toPort": 22.0,
                                  "cidrBlocks": ["0.0.0.0/0"]}]


def _widen_alb_rule(stack: Captured) -> None:
    rule = _one(stack, "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule", "alb")
    rule["props"].update(fromPort=0.0, toPort=65535.0, cidrIpv4="0.0.0.0/0")


def _imds_v1(stack: Captured) -> None:
    template = _one(stack, "aws:ec2/launchTemplate:LaunchTemplate")
    template["props"]["metadataOptions"] = {"httpTokens": "optional"}


def _unencrypted_volume(stack: Captured) -> None:
    template = _one(stack, "aws:ec2/launchTemplate:LaunchTemplate")
    for mapping in template["props"]["blockDeviceMappings"]:
        mapping["ebs"]["encrypted"] = "false"


def _settings(stack: Captured, change: Callable[[dict[str, Any]], None]) -> None:
    parameter = next(r for r in stack if r["type"] == "aws:ssm/parameter:Parameter"
                     and "quotas" in str(r["props"].get("value")))
    value = parameter["props"]["value"]
    wrapped = isinstance(value, dict)
    document = json.loads(value["value"] if wrapped else value)
    change(document)
    text = json.dumps(document)
    parameter["props"]["value"] = {**value, "value": text} if wrapped else text


def _cluster_above_user(stack: Captured) -> None:
    def change(document: dict[str, Any]) -> None:
        document["quotas"]["groups"]["data_analysts"]["clusterMaxCores"] = 3
    _settings(stack, change)


def _long_idle_timeout(stack: Captured) -> None:
    def change(document: dict[str, Any]) -> None:
        document["quotas"]["idleTimeoutMinutes"] = 600
    _settings(stack, change)


def _equal_priorities(stack: Captured) -> None:
    def change(document: dict[str, Any]) -> None:
        document["quotas"]["groups"]["data_analysts"]["priority"] = 2
    _settings(stack, change)


def _big_workers(stack: Captured) -> None:
    def change(document: dict[str, Any]) -> None:
        document["clusters"]["workerMemoryGb"] = 4
        document["quotas"]["groups"]["data_analysts"]["clusterMaxMemoryGb"] = 4
    _settings(stack, change)


def _terminate_at_the_limit(stack: Captured) -> None:
    def change(document: dict[str, Any]) -> None:
        document["clusters"]["workerMemoryTerminate"] = 0.95
    _settings(stack, change)


def _small_pool_in_settings(stack: Captured) -> None:
    def change(document: dict[str, Any]) -> None:
        document["workers"]["max"] = 1
    _settings(stack, change)


def _long_queue(stack: Captured) -> None:
    def change(document: dict[str, Any]) -> None:
        document["quotas"]["maxPendingPerUser"] = 500
    _settings(stack, change)


def _public_template(stack: Captured) -> None:
    template = _one(stack, "aws:ec2/launchTemplate:LaunchTemplate")
    template["props"]["networkInterfaces"] = [{"associatePublicIpAddress": "true"}]


def _all_protocols_to_efs(stack: Captured) -> None:
    rule = _one(stack, "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule", "efs")
    for key in ("fromPort", "toPort", "referencedSecurityGroupId"):
        rule["props"].pop(key, None)
    rule["props"].update(ipProtocol="-1", cidrIpv4="10.0.0.0/16")


def _off_table_port(stack: Captured) -> None:
    rule = _one(stack, "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule", "worker")
    rule["props"].update(fromPort=8787.0, toPort=8787.0)


def _huge_pool(stack: Captured) -> None:
    _one(stack, "aws:autoscaling/group:Group")["props"]["maxSize"] = 50.0


def _http_forward(stack: Captured) -> None:
    listener = next(r for r in stack if r["type"] in ("aws:lb/listener:Listener",
                                                      "aws:alb/listener:Listener")
                    and r["props"].get("protocol") == "HTTP")
    listener["props"]["defaultActions"] = [{"type": "forward", "targetGroupArn": "tg"}]


MUTATIONS: dict[str, tuple[Callable[[Captured], None], set[str]]] = {
    # each mutation, and exactly the mandatory rules it must trip
    "ssh open on workers": (_open_ssh, {
        "no-admin-ports", "security-group-ingress-ports", "public-ingress-only-alb"}),
    "ALB rule opened to all ports": (_widen_alb_rule, {
        "public-ingress-only-alb", "security-group-ingress-ports", "no-admin-ports"}),
    "IMDSv1 allowed": (_imds_v1, {"imdsv2-required"}),
    "worker volume unencrypted": (_unencrypted_volume, {"ebs-encrypted"}),
    "EFS unencrypted": (lambda s: _one(s, "aws:efs/fileSystem:FileSystem")["props"].update(
        encrypted=False), {"efs-encrypted"}),
    "raw bucket SSE dropped": (lambda s: _drop(
        s, "aws:s3/bucketServerSideEncryptionConfiguration:"
           "BucketServerSideEncryptionConfiguration", "raw"), {"s3-bucket-encryption"}),
    "raw bucket public access block dropped": (lambda s: _drop(
        s, "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", "raw"),
        {"s3-public-access-blocked"}),
    "audit bucket versioning dropped": (lambda s: _drop(
        s, "aws:s3/bucketVersioning:BucketVersioning", "audit"), {"s3-versioning"}),
    "raw lifecycle dropped": (lambda s: _drop(
        s, "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration", "raw"),
        {"s3-raw-lifecycle"}),
    "ASG above the ceiling": (_huge_pool, {"asg-size-bounds"}),
    "scale-in alarm dropped": (lambda s: s.remove(next(
        r for r in s if r["type"] == "aws:cloudwatch/metricAlarm:MetricAlarm"
        and r["name"] == "workers-cpu-low")), {"asg-cpu-scaling-alarms"}),
    "cluster quota above user quota": (_cluster_above_user, {"quota-cluster-within-user"}),
    "idle timeout of 10 hours": (_long_idle_timeout, {"quota-idle-timeout"}),
    "flow log dropped": (lambda s: _drop(s, "aws:ec2/flowLog:FlowLog", ""), {"vpc-flow-logs"}),
    "HTTP listener forwards": (_http_forward, {"alb-listener-tls"}),
    "settings a hosts cannot parse": (lambda s: _settings(
        s, lambda d: d["workers"].update(instanceType="z9.huge")), {"runtime-settings-valid"}),
    "equal priorities": (_equal_priorities, {"quota-distinct-priorities"}),
    "worker bigger than a node": (_big_workers, {"quota-worker-fits-node"}),
    "Dask's terminate at 0.95 of a 1.5 GB worker": (_terminate_at_the_limit,
                                                    {"worker-terminate-headroom"}),
    "pause below spill": (lambda s: _settings(
        s, lambda d: d["clusters"].update(workerMemoryPause=0.65)), {"runtime-settings-valid"}),
    "per-user quota beyond the pool": (_small_pool_in_settings, {"quota-user-within-pool"}),
    "500 pending per user": (_long_queue, {"quota-pending-per-user", "runtime-settings-valid"}),
    "public IP on workers": (_public_template, {"no-public-ip"}),
    "all protocols from the VPC to EFS": (_all_protocols_to_efs, {
        "no-all-protocols-from-cidr", "security-group-ingress-ports", "no-admin-ports"}),
    "Dask's 8787 opened between groups": (_off_table_port, {"security-group-ingress-ports"}),
    "log group kept forever": (lambda s: _one(s, "aws:cloudwatch/logGroup:LogGroup")["props"]
                               .pop("retentionInDays"), {"log-group-retention"}),
    "ALB access logs off": (lambda s: _one(s, "aws:lb/loadBalancer:LoadBalancer")["props"]
                            .update(accessLogs={"enabled": False}), {"alb-access-logs"}),
}


@pytest.mark.parametrize("mutation", MUTATIONS)
def test_breaking_the_dev_stack_is_caught(dev_stack: Captured, mutation: str) -> None:
    mutate, expected = MUTATIONS[mutation]
    broken = copy.deepcopy(dev_stack)
    mutate(broken)
    assert {v.policy for v in evaluate(broken) if v.enforcement == "mandatory"} == expected


def test_missing_tags_are_advisory_only(dev_stack: Captured) -> None:
    broken = copy.deepcopy(dev_stack)
    _one(broken, "aws:s3/bucket:Bucket", "raw")["props"]["tags"] = {"project": "dask-platform"}
    violations = evaluate(broken)
    assert [(v.policy, v.enforcement) for v in violations] == [("required-tags", "advisory")]
    assert violations[0].message.startswith("missing tag(s) stack, team, cost-center;")
