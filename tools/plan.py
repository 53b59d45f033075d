"""The offline plan: what ``pulumi up`` would create for a stack, without credentials.

Runs ``__main__.py`` under strict mocks (:mod:`tools.mockrun`) with the config of
``Pulumi.<stack>.yaml``, prints the resources grouped by component with the
properties a reviewer checks (ports, instance types, pool bounds, encryption...),
the capacity model of its settings (daskplatform.capacity), then the policy pack's
verdicts on those resources. Exits non-zero on a mandatory
violation, so pull requests without cloud credentials still get the check.

    python -m tools.plan [--stack dev]     (or: ./dev plan [dev])
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import pulumi

from daskplatform.capacity import capacity_model, render
from daskplatform.settings import load_stack_file
from policies.offline import evaluate, format_violations
from tools.mockrun import RegisteredResource, StackRun, run_program, stack_config

_SECURITY_GROUP_RULE = (
    "securityGroupId",
    "fromPort",
    "toPort",
    "referencedSecurityGroupId",
    "cidrIpv4",
    "cidrIpv6",
)

KEY_PROPERTIES: dict[str, tuple[str, ...]] = {
    "ec2/vpc:Vpc": ("cidrBlock",),
    "ec2/subnet:Subnet": ("cidrBlock", "availabilityZone", "mapPublicIpOnLaunch"),
    "ec2/natGateway:NatGateway": ("subnetId",),
    "ec2/route:Route": ("destinationCidrBlock", "gatewayId", "natGatewayId"),
    "ec2/vpcEndpoint:VpcEndpoint": ("serviceName", "vpcEndpointType"),
    "ec2/flowLog:FlowLog": ("trafficType", "logDestinationType"),
    "ec2/securityGroup:SecurityGroup": ("description",),
    "vpc/securityGroupIngressRule:SecurityGroupIngressRule": _SECURITY_GROUP_RULE,
    "vpc/securityGroupEgressRule:SecurityGroupEgressRule": _SECURITY_GROUP_RULE,
    "ec2/launchTemplate:LaunchTemplate": (
        "instanceType",
        "metadataOptions.httpTokens",
        "metadataOptions.httpPutResponseHopLimit",
        "blockDeviceMappings.0.ebs.volumeType",
        "blockDeviceMappings.0.ebs.encrypted",
        "networkInterfaces.0.associatePublicIpAddress",
        "userData",
    ),
    "ec2/instance:Instance": ("launchTemplate.id",),
    "autoscaling/group:Group": (
        "name",
        "minSize",
        "maxSize",
        "defaultCooldown",
        "instanceRefresh.strategy",
    ),
    "autoscaling/policy:Policy": ("policyType", "stepAdjustments.0.scalingAdjustment"),
    "cloudwatch/metricAlarm:MetricAlarm": (
        "metricName",
        "comparisonOperator",
        "threshold",
        "alarmActions",
    ),
    "cloudwatch/logGroup:LogGroup": ("name", "retentionInDays"),
    "cloudwatch/dashboard:Dashboard": ("dashboardName",),
    "efs/fileSystem:FileSystem": ("encrypted", "throughputMode"),
    "efs/mountTarget:MountTarget": ("subnetId", "securityGroups"),
    "efs/accessPoint:AccessPoint": ("rootDirectory.path",),
    "efs/backupPolicy:BackupPolicy": ("backupPolicy.status",),
    "s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration": (
        "rules.0.applyServerSideEncryptionByDefault.sseAlgorithm",
    ),
    "s3/bucketVersioning:BucketVersioning": ("versioningConfiguration.status",),
    "s3/bucketPublicAccessBlock:BucketPublicAccessBlock": (
        "blockPublicAcls",
        "blockPublicPolicy",
        "ignorePublicAcls",
        "restrictPublicBuckets",
    ),
    "s3/bucketLogging:BucketLogging": ("targetBucket", "targetPrefix"),
    "s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration": (
        "rules.0.transitions.0.days",
        "rules.0.transitions.0.storageClass",
        "rules.0.expiration.days",
    ),
    "s3/bucketObjectv2:BucketObjectv2": ("key",),
    "lb/loadBalancer:LoadBalancer": ("internal", "subnets", "accessLogs.enabled"),
    "lb/listener:Listener": ("port", "protocol", "sslPolicy", "defaultActions.0.type"),
    "lb/targetGroup:TargetGroup": ("port", "protocol", "healthCheck.path"),
    "ssm/parameter:Parameter": ("name", "type", "value"),
    "sns/topicSubscription:TopicSubscription": ("protocol",),
    "sqs/queue:Queue": ("name", "sqsManagedSseEnabled", "visibilityTimeoutSeconds"),
    "s3/bucketNotification:BucketNotification": ("queues.0.events", "queues.0.filterPrefix"),
    "cloudwatch/queryDefinition:QueryDefinition": ("name",),
}
"""Per AWS type (token without the ``aws:`` package), the inputs worth showing."""

SIZE_ONLY = {"userData", "value"}
"""Long values shown by size only."""


def _lookup(inputs: dict[str, Any], path: str) -> Any:
    value: Any = inputs
    for part in path.split("."):
        if isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        elif isinstance(value, dict) and part in value:
            value = value[part]
        else:
            return None
    return value


def _show(value: Any, names: dict[str, str]) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str):
        return names.get(value, value)
    if isinstance(value, list):
        return "[" + ", ".join(_show(v, names) for v in value) + "]"
    return str(value)


def describe(resource: RegisteredResource, names: dict[str, str]) -> str:
    """``key=value`` pairs of a resource's key properties; ids/ARNs shown as resource names."""
    pairs = []
    for path in KEY_PROPERTIES.get(resource.type.removeprefix("aws:"), ()):
        value = _lookup(resource.inputs, path)
        if value is None:
            continue
        key = ".".join(part for part in path.split(".") if not part.isdigit())
        shown = f"{len(str(value))} B" if path in SIZE_ONLY else _show(value, names)
        pairs.append(f"{key}={shown}")
    return " ".join(pairs)


def render_plan(run: StackRun, stack: str) -> str:
    """The plan as text: one block per component, one line per resource."""
    names = {r.id: r.name for r in run.resources if r.id}
    names.update({r.outputs["arn"]: r.name for r in run.resources if r.outputs.get("arn")})
    components = [r for r in run.resources if not r.custom]
    children: dict[str, list[RegisteredResource]] = {c.urn: [] for c in components}
    for resource in run.resources:
        if resource.custom:
            children.setdefault(resource.parent_urn, []).append(resource)
    custom_count = sum(len(v) for v in children.values())
    summary = (
        f"Offline plan of stack {stack!r} under Pulumi mocks (no credentials): "
        f"{custom_count} resources in {len(components)} components, "
        f"registered in {run.seconds:.2f} s"
    )
    lines = [summary, ""]
    for component in components:
        lines.append(f"{component.type.rsplit(':', 1)[-1]} {component.name!r} ({component.type})")
        for resource in sorted(children[component.urn], key=lambda r: r.name):
            kind = (
                resource.type.removeprefix("aws:").split("/")[0]
                + ":"
                + resource.type.rsplit(":", 1)[-1]
            )
            lines.append(f"  {kind:<36} {resource.name:<40} {describe(resource, names)}".rstrip())
        lines.append("")
    lines.append("Outputs")
    lines += [f"  {key:<28} {_show(value, {})}" for key, value in sorted(run.outputs.items())]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.plan", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("stack_name", nargs="?", help="stack name (same as --stack)")
    parser.add_argument("--stack", default=None, help="reads Pulumi.<stack>.yaml (default: dev)")
    args = parser.parse_args(argv)
    stack = args.stack or args.stack_name or "dev"
    try:
        run = run_program(stack_config(stack), stack=stack)
    except (pulumi.RunError, FileNotFoundError) as exc:
        sys.stderr.write(f"plan: {exc}\n")
        return 2
    sys.stdout.write(render_plan(run, stack))
    sys.stdout.write("\n" + render(capacity_model(load_stack_file(f"Pulumi.{stack}.yaml"))))
    violations = evaluate(run.resources)
    mandatory = [v for v in violations if v.enforcement == "mandatory"]
    sys.stdout.write(
        f"\nPolicy pack: {len(mandatory)} mandatory, "
        f"{len(violations) - len(mandatory)} advisory violation(s)\n"
    )
    if violations:
        sys.stdout.write(format_violations(violations) + "\n")
    return 1 if mandatory else 0


if __name__ == "__main__":
    sys.exit(main())
