"""Security-group ingress rules: only the platform's ports (DESIGN.md, Ports), the
world only to the ALB on 80/443, never SSH/RDP, never every protocol from a CIDR.

Ingress is declared three ways (inline ``ingress`` blocks, ``ec2.SecurityGroupRule``
and ``vpc.SecurityGroupIngressRule``); each rule reads all three through
:func:`ingress_of` so none slips past.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from daskplatform.settings import PortSettings
from policies.model import WORLD_CIDRS, ConfigOption, as_int, items, tag_map

SECURITY_GROUP = "aws:ec2/securityGroup:SecurityGroup"
SECURITY_GROUP_RULE = "aws:ec2/securityGroupRule:SecurityGroupRule"
INGRESS_RULE = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
INGRESS_TYPES = (SECURITY_GROUP, SECURITY_GROUP_RULE, INGRESS_RULE)

_PROTOCOL_NAMES = {"-1": "all", "all": "all", "6": "tcp", "17": "udp", "1": "icmp",
                   "58": "icmpv6"}
ADMIN_PORTS = {22: "SSH", 3389: "RDP"}

_PORTS = PortSettings()
PORT_OPTIONS = {
    "allowedPorts": ConfigOption(
        sorted({_PORTS.https, _PORTS.http, _PORTS.gateway_http, _PORTS.gateway_tls,
                _PORTS.node_agent, _PORTS.hub_api, _PORTS.nfs, _PORTS.ldaps, 389}),
        "array", "Single TCP ports ingress may open (PortSettings defaults; 389 is LDAP "
                 "with StartTLS)."),
    "allowedPortRanges": ConfigOption(
        sorted([list(_PORTS.notebook_range), list(_PORTS.scheduler_range),
                list(_PORTS.worker_range)]),
        "array", "[low, high] TCP ranges ingress may open: the scheduler, worker and "
                 "notebook ranges."),
    "allowedProtocols": ConfigOption(["tcp"], "array", "Protocols ingress may use."),
}
PUBLIC_OPTIONS = {
    "publicPorts": ConfigOption([_PORTS.http, _PORTS.https], "array",
                                "Ports the ALB may open to 0.0.0.0/0 or ::/0."),
    "albPattern": ConfigOption(
        r"(^|[^a-z0-9])alb([^a-z0-9]|$)", "string",
        "Regex (case-insensitive) on a security group's or rule's logical name, name, "
        "namePrefix, description or Name/Role tag that marks it as the ALB's."),
}


@dataclass(frozen=True)
class Ingress:
    """One ingress permission, whatever resource declared it."""

    where: str
    """Where it was declared, for messages (e.g. ``ingress[1]``)."""
    protocol: str
    from_port: int
    to_port: int
    cidrs: tuple[str, ...]
    source: str
    """Who it admits, for messages."""

    @property
    def ports(self) -> str:
        if self.protocol == "all":
            return "all ports"
        if self.from_port == self.to_port:
            return f"port {self.from_port}"
        return f"ports {self.from_port}-{self.to_port}"

    def covers(self, port: int) -> bool:
        return self.protocol == "all" or (
            self.protocol in ("tcp", "udp") and self.from_port <= port <= self.to_port)


def _protocol(value: Any) -> str:
    text = str(value if value is not None else "-1").strip().lower()
    return _PROTOCOL_NAMES.get(text, text)


def _ingress(where: str, protocol: Any, from_port: Any, to_port: Any, cidrs: list[str],
             other_source: Any) -> Ingress:
    proto = _protocol(protocol)
    low, high = (0, 65535) if proto == "all" else (as_int(from_port), as_int(to_port))
    source = ", ".join(cidrs) if cidrs else ("a security group" if other_source else "nowhere")
    return Ingress(where, proto, low, high, tuple(cidrs), source)


def ingress_of(resource_type: str, props: Mapping[str, Any]) -> list[Ingress]:
    """Every ingress permission a resource of one of ``INGRESS_TYPES`` declares."""
    if resource_type == SECURITY_GROUP:
        return [
            _ingress(f"ingress[{index}] ", rule.get("protocol"), rule.get("fromPort"),
                     rule.get("toPort"),
                     items(rule.get("cidrBlocks")) + items(rule.get("ipv6CidrBlocks")),
                     items(rule.get("securityGroups")) or rule.get("self")
                     or items(rule.get("prefixListIds")))
            for index, rule in enumerate(items(props.get("ingress")))
        ]
    if resource_type == SECURITY_GROUP_RULE and props.get("type") == "ingress":
        return [_ingress("", props.get("protocol"), props.get("fromPort"), props.get("toPort"),
                         items(props.get("cidrBlocks")) + items(props.get("ipv6CidrBlocks")),
                         props.get("sourceSecurityGroupId") or props.get("self")
                         or items(props.get("prefixListIds")))]
    if resource_type == INGRESS_RULE:
        cidrs = [c for c in (props.get("cidrIpv4"), props.get("cidrIpv6")) if c]
        return [_ingress("", props.get("ipProtocol"), props.get("fromPort"), props.get("toPort"),
                         cidrs, props.get("referencedSecurityGroupId")
                         or props.get("prefixListId"))]
    return []


def _port_ranges(config: Mapping[str, Any]) -> list[tuple[int, int]]:
    """Allowed single ports and ranges as (low, high); engine config sends floats."""
    return [(int(p), int(p)) for p in config["allowedPorts"]] + [
        (int(low), int(high)) for low, high in config["allowedPortRanges"]]


def check_ingress_ports(resource_type: str, name: str, props: Mapping[str, Any],
                        config: Mapping[str, Any]) -> list[str]:
    """Only the platform's ports and protocols."""
    if resource_type not in INGRESS_TYPES:
        return []
    messages = []
    for rule in ingress_of(resource_type, props):
        if rule.protocol not in config["allowedProtocols"]:
            messages.append(
                f"{rule.where}allows protocol {rule.protocol} ({rule.ports}) from {rule.source}; "
                f"use one of {', '.join(config['allowedProtocols'])} on a platform port")
        elif not any(low <= rule.from_port and rule.to_port <= high
                     for low, high in _port_ranges(config)):
            allowed = [f"{low}" if low == high else f"{low}-{high}"
                       for low, high in _port_ranges(config)]
            messages.append(
                f"{rule.where}opens {rule.ports} from {rule.source}, which is not a platform "
                f"port; allowed: {', '.join(allowed)} (DESIGN.md, Ports)")
    return messages


def check_no_admin_ports(resource_type: str, name: str, props: Mapping[str, Any],
                         config: Mapping[str, Any]) -> list[str]:
    """SSH and RDP are never open: admin shells go through SSM Session Manager."""
    if resource_type not in INGRESS_TYPES:
        return []
    return [
        f"{rule.where}opens port {port} ({label}) from {rule.source}; remove it and use "
        "SSM Session Manager for shells"
        for rule in ingress_of(resource_type, props)
        for port, label in ADMIN_PORTS.items() if rule.covers(port)
    ]


def check_no_all_protocols_from_cidr(resource_type: str, name: str, props: Mapping[str, Any],
                                     config: Mapping[str, Any]) -> list[str]:
    """Protocol -1 from an address range opens every port to it."""
    if resource_type not in INGRESS_TYPES:
        return []
    return [
        f"{rule.where}allows all protocols from {rule.source}; allow tcp on the needed "
        "port instead, or reference a security group"
        for rule in ingress_of(resource_type, props)
        if rule.protocol == "all" and rule.cidrs
    ]


def is_alb_owned(name: str, props: Mapping[str, Any], pattern: str) -> bool:
    """Whether the security group or rule is marked as the ALB's."""
    tags = tag_map(props)
    texts = [name, props.get("name"), props.get("namePrefix"), props.get("description"),
             tags.get("Name"), tags.get("Role")]
    marker = re.compile(pattern, re.IGNORECASE)
    return any(isinstance(t, str) and marker.search(t) for t in texts)


def check_public_ingress_only_alb(resource_type: str, name: str, props: Mapping[str, Any],
                                  config: Mapping[str, Any]) -> list[str]:
    """0.0.0.0/0 and ::/0 reach only the ALB, and only on 80/443."""
    if resource_type not in INGRESS_TYPES:
        return []
    messages = []
    alb = is_alb_owned(name, props, config["albPattern"])
    public_ports = [int(p) for p in config["publicPorts"]]
    for rule in ingress_of(resource_type, props):
        world = sorted(WORLD_CIDRS.intersection(rule.cidrs))
        if not world:
            continue
        if not alb:
            messages.append(
                f"{rule.where}opens {rule.ports} to {', '.join(world)} on a security group that "
                "is not the ALB's; reference a security group or list specific CIDRs "
                "(dask-platform:allowedCidrs)")
        elif rule.protocol != "tcp" or not any(
                rule.from_port == rule.to_port == port for port in public_ports):
            messages.append(
                f"{rule.where}opens {rule.ports} ({rule.protocol}) to {', '.join(world)}; the "
                f"ALB may be public only on tcp {', '.join(map(str, public_ports))}")
    return messages
