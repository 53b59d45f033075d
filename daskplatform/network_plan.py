"""The platform's network plan: subnets, security groups and every rule between them.

One table, two readers: ``components/security_groups.py`` declares each rule as an AWS
security-group rule, and the rehearsal (``daskplatform.rehearsal``) renders the same
rules as nftables in each host's network namespace, so a flow the runtime needs and the
table lacks fails there before it fails on AWS. Plain data only (no Pulumi), so hosts
and tests import it cheaply.

Each flow between two platform groups is an ingress rule on the receiver and the
matching egress rule on the sender, by security-group reference. Only the ALB takes
CIDRs (``allowedCidrs`` on 443 and 80). Hosts may leave the VPC on 443 (AWS APIs through
the S3 endpoint or NAT, package installs) and the gateway on the LDAP port. There is
no SSH: admin shells go through SSM Session Manager.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlparse

from daskplatform.settings import PlatformSettings, PortSettings

AZ_COUNT = 2
ANYWHERE = "0.0.0.0/0"

SECURITY_GROUPS = {
    "alb": "Application Load Balancer: HTTPS from allowedCidrs",
    "gateway": "Gateway host: JupyterHub, dask-gateway-server",
    "scheduler": "Scheduler host: per-user Dask schedulers",
    "worker": "Worker pool: Dask workers",
    "client": "Attach to any VPC host that runs Dask clients through the gateway",
    "efs": "EFS mount targets",
}
"""Security group by role, with its description."""

HOST_GROUPS = ("gateway", "scheduler", "worker")
"""Groups of the platform's own hosts (they reach AWS APIs on 443)."""

ALB_HEALTH_CHECK_PATH = "/hub/health"
"""The ALB target group's health check: JupyterHub's unauthenticated health endpoint."""


def subnet_cidrs(vpc_cidr: str) -> tuple[list[str], list[str]]:
    """(public, private) CIDRs: the VPC cut into sixteenths, public first."""
    network = ipaddress.ip_network(vpc_cidr)
    blocks = [str(b) for b in network.subnets(new_prefix=network.prefixlen + 4)]
    return blocks[:AZ_COUNT], blocks[AZ_COUNT : 2 * AZ_COUNT]


@dataclass(frozen=True)
class Flow:
    """``sources`` may open ``ports`` (inclusive range) on ``target``."""

    sources: tuple[str, ...]
    target: str
    ports: tuple[int, int]
    why: str


def platform_flows(ports: PortSettings) -> list[Flow]:
    """DESIGN.md's Ports table between platform groups (ALB ingress is by CIDR, apart).

    Schedulers reach the gateway on its scheduler proxy port, which also serves the
    gateway's HTTP API: that is where they send heartbeats (``PoolBackend.api_url``).
    VPC clients (the client group) ask the gateway's API for their cluster's credentials
    through the ALB over HTTPS, then connect to the scheduler through the proxy port.
    Users' JupyterLab servers run on worker nodes: the hub's proxy on the gateway host
    forwards to them, they call the hub's API, and ``Gateway()`` in them reaches the
    gateway on the proxy port."""
    return [
        Flow(("client",), "alb", (ports.https, ports.https),
             "VPC clients: the gateway API (cluster credentials) through the ALB"),
        Flow(("alb",), "gateway", (ports.gateway_http, ports.gateway_http),
             "JupyterHub / gateway HTTP"),
        Flow(("client", "scheduler", "worker"), "gateway",
             (ports.gateway_tls, ports.gateway_tls),
             "gateway scheduler proxy and API (clients, scheduler heartbeats)"),
        Flow(("gateway",), "scheduler", (ports.node_agent, ports.node_agent), "node agent"),
        Flow(("gateway",), "worker", (ports.node_agent, ports.node_agent), "node agent"),
        Flow(("gateway",), "worker", ports.notebook_range,
             "JupyterHub's proxy -> users' JupyterLab servers"),
        Flow(("worker",), "gateway", (ports.hub_api, ports.hub_api),
             "JupyterLab servers -> JupyterHub's API (login, activity)"),
        Flow(("gateway", "worker"), "scheduler", ports.scheduler_range, "Dask scheduler comms"),
        Flow(("scheduler", "worker"), "worker", ports.worker_range, "Dask worker comms"),
        Flow(("gateway", "scheduler", "worker"), "efs", (ports.nfs, ports.nfs), "NFS (EFS)"),
    ]


def ldap_port(settings: PlatformSettings) -> int:
    """Where the gateway reaches FreeIPA: the ldapUrl's port, else ``ports.ldaps`` for
    ldaps:// and 389 (StartTLS) for ldap://."""
    parsed = urlparse(settings.ldap_url)
    return parsed.port or (settings.ports.ldaps if parsed.scheme == "ldaps" else 389)


@dataclass(frozen=True)
class Rule:
    """One security-group rule: ``group`` lets TCP ``ports`` in from (ingress) or out to
    (egress) ``peer``, a group role or a CIDR block."""

    direction: Literal["ingress", "egress"]
    group: str
    ports: tuple[int, int]
    peer: str
    why: str
    name: str
    """Unique suffix of the rule's resource name (stable: renaming replaces the rule)."""

    @property
    def peer_is_group(self) -> bool:
        return self.peer in SECURITY_GROUPS


def security_group_rules(settings: PlatformSettings) -> list[Rule]:
    """Every rule of the platform's security groups, in declaration order."""
    rules: list[Rule] = []
    for flow in platform_flows(settings.ports):
        low = flow.ports[0]
        for source in flow.sources:
            suffix = f"{source}-to-{flow.target}-{low}"
            rules.append(Rule("ingress", flow.target, flow.ports, source, flow.why,
                              f"in-{suffix}"))
            rules.append(Rule("egress", source, flow.ports, flow.target, flow.why,
                              f"out-{suffix}"))
    ports = settings.ports
    for index, cidr in enumerate(settings.allowed_cidrs):
        for port, why in ((ports.https, "HTTPS"), (ports.http, "HTTP, redirected to HTTPS")):
            rules.append(Rule("ingress", "alb", (port, port), cidr, why,
                              f"in-allowed-{index}-to-alb-{port}"))
    for host in HOST_GROUPS:
        rules.append(Rule("egress", host, (443, 443), ANYWHERE,
                          "AWS APIs and package installs", f"out-{host}-to-any-443"))
    port = ldap_port(settings)
    rules.append(Rule("egress", "gateway", (port, port), ANYWHERE, "FreeIPA LDAP",
                      f"out-gateway-to-ldap-{port}"))
    return rules
