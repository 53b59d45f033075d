"""Every rule of the pack: its name, enforcement, config schema and check, and the
module-level pulumi_policy objects wrapping them. Importing this starts nothing;
``PolicyPack(...)`` (which serves the engine) lives only in ``__main__.py``.
"""

from __future__ import annotations

from collections.abc import Mapping

from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    PolicyResource,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from policies import encryption, hosts, network, observability, quotas, scaling, storage, tagging
from policies.model import ADVISORY, MANDATORY, ConfigOption, Rule, StackResource

RULES: tuple[Rule, ...] = (
    # security groups
    Rule("security-group-ingress-ports", "Ingress opens only the platform's ports.", MANDATORY,
         resource_check=network.check_ingress_ports, config=network.PORT_OPTIONS),
    Rule("no-admin-ports", "Ingress never opens SSH (22) or RDP (3389).", MANDATORY,
         resource_check=network.check_no_admin_ports),
    Rule("no-all-protocols-from-cidr", "Ingress never allows all protocols from a CIDR.",
         MANDATORY, resource_check=network.check_no_all_protocols_from_cidr),
    Rule("public-ingress-only-alb", "0.0.0.0/0 and ::/0 reach only the ALB, on 80/443.",
         MANDATORY, resource_check=network.check_public_ingress_only_alb,
         config=network.PUBLIC_OPTIONS),
    # encryption
    Rule("efs-encrypted", "EFS file systems are encrypted at rest.", MANDATORY,
         resource_check=encryption.check_efs_encrypted),
    Rule("ebs-encrypted", "EBS volumes of launch templates and instances are encrypted.",
         MANDATORY, resource_check=encryption.check_ebs_encrypted),
    Rule("alb-listener-tls", "Listeners serve HTTPS with TLS 1.2+, or HTTP that only "
         "redirects to HTTPS.", MANDATORY, resource_check=encryption.check_listener_tls,
         config=encryption.TLS_OPTIONS),
    Rule("s3-bucket-encryption", "Every S3 bucket has server-side encryption.", MANDATORY,
         stack_check=storage.check_bucket_encryption),
    # S3
    Rule("s3-public-access-blocked", "Every S3 bucket blocks all public access.", MANDATORY,
         stack_check=storage.check_bucket_public_access),
    Rule("s3-versioning", "Every S3 bucket has versioning enabled.", MANDATORY,
         stack_check=storage.check_bucket_versioning),
    Rule("s3-raw-lifecycle", "The raw bucket moves to Glacier by 90 days and expires by 365.",
         MANDATORY, stack_check=storage.check_raw_lifecycle, config=storage.LIFECYCLE_OPTIONS),
    # hosts
    Rule("imdsv2-required", "Instances and launch templates require IMDSv2.", MANDATORY,
         resource_check=hosts.check_imdsv2),
    Rule("no-public-ip", "Instances and launch templates get no public IP.", MANDATORY,
         resource_check=hosts.check_no_public_ip),
    # auto scaling
    Rule("asg-size-bounds", "Auto Scaling groups keep min <= desired <= max <= ceiling.",
         MANDATORY, resource_check=scaling.check_asg_bounds, config=scaling.BOUNDS_OPTIONS),
    Rule("asg-cpu-scaling-alarms", "Each Auto Scaling group has CPU scale-out and scale-in "
         "alarms wired to its scaling policies.", MANDATORY,
         stack_check=scaling.check_cpu_scaling_alarms),
    # quotas on the published runtime settings
    Rule("runtime-settings-valid", "The published runtime settings parse.", MANDATORY,
         resource_check=quotas.check_settings_schema),
    Rule("quota-cluster-within-user", "Per-cluster quotas are within per-user quotas.",
         MANDATORY, resource_check=quotas.check_cluster_within_user),
    Rule("quota-user-within-pool", "Per-user quotas fit the pool at its maximum size.",
         MANDATORY, resource_check=quotas.check_user_within_pool),
    Rule("quota-worker-fits-node", "A worker (and a scheduler) fits its host.", MANDATORY,
         resource_check=quotas.check_worker_fits_node),
    Rule("quota-distinct-priorities", "Group priorities are distinct.", MANDATORY,
         resource_check=quotas.check_distinct_priorities),
    Rule("worker-terminate-headroom", "A default worker's terminate threshold leaves its "
         "nanny room below the cgroup limit.", MANDATORY,
         resource_check=quotas.check_terminate_headroom),
    Rule("quota-idle-timeout", "The idle timeout is within the configured maximum.",
         MANDATORY, resource_check=quotas.check_idle_timeout, config=quotas.IDLE_OPTIONS),
    Rule("quota-pending-per-user", "Pending worker requests per user are capped.", MANDATORY,
         resource_check=quotas.check_pending_per_user, config=quotas.PENDING_OPTIONS),
    # logging
    Rule("vpc-flow-logs", "Every VPC the stack creates has a flow log.", MANDATORY,
         stack_check=observability.check_flow_logs),
    Rule("alb-access-logs", "Application load balancers write access logs.", MANDATORY,
         resource_check=observability.check_alb_access_logs),
    Rule("log-group-retention", "CloudWatch log groups have a retention.", MANDATORY,
         resource_check=observability.check_log_group_retention),
    # tags
    Rule("required-tags", "Taggable AWS resources carry the required tags.", ADVISORY,
         resource_check=tagging.check_required_tags, config=tagging.TAG_OPTIONS),
)

_LEVELS = {MANDATORY: EnforcementLevel.MANDATORY, ADVISORY: EnforcementLevel.ADVISORY}


def _schema(options: Mapping[str, ConfigOption]) -> PolicyConfigSchema | None:
    if not options:
        return None
    return PolicyConfigSchema(properties={
        key: {"type": option.json_type, "default": option.default,
              "description": option.description}
        for key, option in options.items()
    })


def stack_resource(resource: PolicyResource) -> StackResource:
    """The engine's view of a resource, reduced to what stack checks read."""
    return StackResource(
        type=resource.resource_type, name=resource.name, props=resource.props, urn=resource.urn,
        property_dependencies={
            prop: frozenset(x for dep in deps for x in (dep.name, dep.urn))
            for prop, deps in resource.property_dependencies.items()
        },
    )


def _resource_policy(rule: Rule) -> ResourceValidationPolicy:
    check = rule.resource_check
    assert check is not None

    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        config = rule.effective_config(args.get_config())
        for message in check(args.resource_type, args.name, args.props, config):
            report_violation(message, None)

    return ResourceValidationPolicy(
        name=rule.name, description=rule.description, validate=validate,
        enforcement_level=_LEVELS[rule.enforcement], config_schema=_schema(rule.config))


def _stack_policy(rule: Rule) -> StackValidationPolicy:
    check = rule.stack_check
    assert check is not None

    def validate(args: StackValidationArgs, report_violation: ReportViolation) -> None:
        resources = [stack_resource(r) for r in args.resources]
        urns = {r.name: r.urn for r in resources}
        for name, message in check(resources, rule.effective_config(args.get_config())):
            report_violation(message, urns.get(name) or None)

    return StackValidationPolicy(
        name=rule.name, description=rule.description, validate=validate,
        enforcement_level=_LEVELS[rule.enforcement], config_schema=_schema(rule.config))


POLICIES: list[ResourceValidationPolicy | StackValidationPolicy] = [
    _resource_policy(rule) if rule.resource_check else _stack_policy(rule) for rule in RULES
]
"""What ``PolicyPack(policies=...)`` serves, in the order of RULES."""
