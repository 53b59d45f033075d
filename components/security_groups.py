"""SecurityGroups: exactly the port table of DESIGN.md, as security-group references.

Each flow between two platform groups becomes an ingress rule on the receiver and the
matching egress rule on the sender, so no group can send or receive anything else. Only
the ALB accepts CIDRs (allowedCidrs, 443 and 80). Hosts may leave the VPC on 443 (AWS
APIs through the S3 endpoint or NAT, package installs) and the gateway on the LDAP port.
There is no SSH: admin shells go through SSM Session Manager.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlparse

import pulumi
import pulumi_aws as aws

from daskplatform.settings import PlatformSettings

ANYWHERE = "0.0.0.0/0"

GROUPS = {
    "alb": "Application Load Balancer: HTTPS from allowedCidrs",
    "gateway": "Gateway host: JupyterHub, dask-gateway-server",
    "scheduler": "Scheduler host: per-user Dask schedulers",
    "worker": "Worker pool: Dask workers",
    "client": "Attach to any VPC host that runs Dask clients through the gateway",
    "efs": "EFS mount targets",
}


@dataclass(frozen=True)
class Flow:
    """``sources`` may open ``ports`` (inclusive range) on ``target``."""

    sources: tuple[str, ...]
    target: str
    ports: tuple[int, int]
    why: str


def platform_flows(settings: PlatformSettings) -> list[Flow]:
    """DESIGN.md Ports table between platform groups (ALB ingress is by CIDR, apart)."""
    ports = settings.ports
    return [
        Flow(
            ("alb",),
            "gateway",
            (ports.gateway_http, ports.gateway_http),
            "JupyterHub / gateway HTTP",
        ),
        Flow(
            ("client", "scheduler", "worker"),
            "gateway",
            (ports.gateway_tls, ports.gateway_tls),
            "gateway scheduler TLS proxy",
        ),
        Flow(("gateway",), "scheduler", (ports.node_agent, ports.node_agent), "node agent"),
        Flow(("gateway",), "worker", (ports.node_agent, ports.node_agent), "node agent"),
        Flow(("gateway", "worker"), "scheduler", ports.scheduler_range, "Dask scheduler comms"),
        Flow(("scheduler", "worker"), "worker", ports.worker_range, "Dask worker comms"),
        Flow(("gateway", "scheduler", "worker"), "efs", (ports.nfs, ports.nfs), "NFS (EFS)"),
    ]


def ldap_port(settings: PlatformSettings) -> int:
    """Where the gateway reaches FreeIPA: the ldapUrl's port, else ``ports.ldaps`` for
    ldaps:// and 389 (StartTLS) for ldap://."""
    parsed = urlparse(settings.ldap_url)
    return parsed.port or (settings.ports.ldaps if parsed.scheme == "ldaps" else 389)


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
            for role, description in GROUPS.items()
        }
        self.ids = {role: group.id for role, group in groups.items()}

        def rule(
            kind: type,
            rule_name: str,
            group: str,
            low: int,
            high: int,
            why: str,
            **peer: pulumi.Input[str],
        ) -> None:
            kind(
                rule_name,
                security_group_id=self.ids[group],
                ip_protocol="tcp",
                from_port=low,
                to_port=high,
                description=why,
                tags=dict(tags),
                opts=child,
                **peer,
            )

        ingress, egress = aws.vpc.SecurityGroupIngressRule, aws.vpc.SecurityGroupEgressRule
        for flow in platform_flows(settings):
            low, high = flow.ports
            for source in flow.sources:
                suffix = f"{source}-to-{flow.target}-{low}"
                rule(
                    ingress,
                    f"{name}-in-{suffix}",
                    flow.target,
                    low,
                    high,
                    flow.why,
                    referenced_security_group_id=self.ids[source],
                )
                rule(
                    egress,
                    f"{name}-out-{suffix}",
                    source,
                    low,
                    high,
                    flow.why,
                    referenced_security_group_id=self.ids[flow.target],
                )
        for index, cidr in enumerate(settings.allowed_cidrs):
            for port, why in (
                (settings.ports.https, "HTTPS"),
                (settings.ports.http, "HTTP, redirected to HTTPS"),
            ):
                rule(
                    ingress,
                    f"{name}-in-allowed-{index}-to-alb-{port}",
                    "alb",
                    port,
                    port,
                    why,
                    **_cidr_args(cidr),
                )
        for host in ("gateway", "scheduler", "worker"):
            rule(
                egress,
                f"{name}-out-{host}-to-any-443",
                host,
                443,
                443,
                "AWS APIs and package installs",
                cidr_ipv4=ANYWHERE,
            )
        port = ldap_port(settings)
        rule(
            egress,
            f"{name}-out-gateway-to-ldap-{port}",
            "gateway",
            port,
            port,
            "FreeIPA LDAP",
            cidr_ipv4=ANYWHERE,
        )
        self.register_outputs({f"{role}_id": group_id for role, group_id in self.ids.items()})
