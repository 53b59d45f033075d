"""SecurityGroups: exactly the rules of ``daskplatform.network_plan``, as security-group
rules by reference (only the ALB takes CIDRs). The rehearsal renders the same table as
nftables, so both read one declaration."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

import pulumi
import pulumi_aws as aws

from daskplatform.network_plan import SECURITY_GROUPS, security_group_rules
from daskplatform.settings import PlatformSettings


def _cidr_args(cidr: str) -> dict[str, str]:
    key = "cidr_ipv6" if ipaddress.ip_network(cidr).version == 6 else "cidr_ipv4"
    return {key: cidr}


class SecurityGroups(pulumi.ComponentResource):
    ids: dict[str, pulumi.Output[str]]
    """Group id by role: alb, gateway, scheduler, worker, client, efs."""

    def __init__(
        self,
        name: str,
        settings: PlatformSettings,
        vpc_id: pulumi.Input[str],
        tags: Mapping[str, str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("daskplatform:aws:SecurityGroups", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        groups = {
            role: aws.ec2.SecurityGroup(
                f"{name}-{role}",
                vpc_id=vpc_id,
                description=description,
                tags={**tags, "Name": f"{name}-{role}"},
                opts=child,
            )
            for role, description in SECURITY_GROUPS.items()
        }
        self.ids = {role: group.id for role, group in groups.items()}
        kinds = {"ingress": aws.vpc.SecurityGroupIngressRule,
                 "egress": aws.vpc.SecurityGroupEgressRule}
        for rule in security_group_rules(settings):
            peer = ({"referenced_security_group_id": self.ids[rule.peer]}
                    if rule.peer_is_group else _cidr_args(rule.peer))
            kinds[rule.direction](
                f"{name}-{rule.name}",
                security_group_id=self.ids[rule.group],
                ip_protocol="tcp",
                from_port=rule.ports[0],
                to_port=rule.ports[1],
                description=rule.why,
                tags=dict(tags),
                opts=child,
                **peer,
            )
        self.register_outputs({f"{role}_id": group_id for role, group_id in self.ids.items()})
