"""Which security group reaches which port from where: DESIGN.md's Ports table, exactly."""

from __future__ import annotations

from tests.cloud.conftest import host_interface, of_short_type, one
from tools.mockrun import StackRun

INGRESS = "SecurityGroupIngressRule"
EGRESS = "SecurityGroupEgressRule"

EXPECTED_SG_INGRESS = {
    # (receiver, sender, from_port, to_port)
    ("alb", "client", 443, 443),
    ("gateway", "alb", 8000, 8000),
    ("gateway", "client", 8786, 8786),
    ("gateway", "scheduler", 8786, 8786),
    ("gateway", "worker", 8786, 8786),
    ("scheduler", "gateway", 8790, 8790),
    ("worker", "gateway", 8790, 8790),
    ("worker", "gateway", 8800, 8899),  # JupyterHub's proxy -> notebook servers
    ("gateway", "worker", 8081, 8081),  # notebook servers -> JupyterHub's API
    ("scheduler", "gateway", 9000, 9199),
    ("scheduler", "worker", 9000, 9199),
    ("worker", "scheduler", 9200, 9999),
    ("worker", "worker", 9200, 9999),
    ("efs", "gateway", 2049, 2049),
    ("efs", "scheduler", 2049, 2049),
    ("efs", "worker", 2049, 2049),
}


def group_roles(run: StackRun) -> dict[str, str]:
    """Security group id -> role (the part after ``security-``)."""
    return {sg.id: sg.name.removeprefix("security-") for sg in of_short_type(run, "SecurityGroup")}


def rules(run: StackRun, kind: str) -> set[tuple]:
    """(group, peer, from, to) with peer a role for SG references, else the CIDR."""
    roles = group_roles(run)
    found = set()
    for rule in of_short_type(run, kind):
        inputs = rule.inputs
        assert inputs["ipProtocol"] == "tcp", rule.name
        peer = inputs.get("referencedSecurityGroupId")
        peer = roles[peer] if peer else inputs.get("cidrIpv4") or inputs.get("cidrIpv6")
        found.add(
            (roles[inputs["securityGroupId"]], peer, int(inputs["fromPort"]), int(inputs["toPort"]))
        )
    return found


def test_ingress_between_groups_is_exactly_the_port_table(dev: StackRun) -> None:
    roles = set(group_roles(dev).values())
    by_reference = {r for r in rules(dev, INGRESS) if r[1] in roles}
    assert by_reference == EXPECTED_SG_INGRESS


def test_only_the_alb_takes_cidr_ingress_and_only_on_443_and_80(
    dev: StackRun, custom: StackRun
) -> None:
    for run, cidrs in ((dev, {"10.20.0.0/16"}), (custom, {"81.2.69.0/24", "130.149.0.0/16"})):
        roles = set(group_roles(run).values())
        by_cidr = {r for r in rules(run, INGRESS) if r[1] not in roles}
        assert by_cidr == {("alb", cidr, port, port) for cidr in cidrs for port in (443, 80)}


def test_no_ingress_from_anywhere_except_alb_web_ports(dev: StackRun, custom: StackRun) -> None:
    for run in (dev, custom):
        for group, peer, low, high in rules(run, INGRESS):
            if peer in ("0.0.0.0/0", "::/0"):
                assert group == "alb" and (low, high) in ((443, 443), (80, 80))


def test_every_flow_is_allowed_out_of_the_sender_too(dev: StackRun) -> None:
    egress = rules(dev, EGRESS)
    for receiver, sender, low, high in EXPECTED_SG_INGRESS:
        assert (sender, receiver, low, high) in egress


def test_egress_leaves_the_vpc_only_on_https_and_ldap(dev: StackRun, custom: StackRun) -> None:
    for run, ldap in ((dev, 636), (custom, 389)):
        roles = set(group_roles(run).values())
        outside = {r for r in rules(run, EGRESS) if r[1] not in roles}
        assert outside == {
            ("gateway", "0.0.0.0/0", 443, 443),
            ("scheduler", "0.0.0.0/0", 443, 443),
            ("worker", "0.0.0.0/0", 443, 443),
            ("gateway", "0.0.0.0/0", ldap, ldap),
        }


def test_no_port_22_and_no_inline_rules_anywhere(dev: StackRun, custom: StackRun) -> None:
    for run in (dev, custom):
        for kind in (INGRESS, EGRESS):
            for _, _, low, high in rules(run, kind):
                assert not low <= 22 <= high
        for group in of_short_type(run, "SecurityGroup"):
            assert not group.inputs.get("ingress") and not group.inputs.get("egress"), group.name
        for host in of_short_type(run, "LaunchTemplate") + of_short_type(run, "Instance"):
            assert "keyName" not in host.inputs, host.name


def test_alb_and_hosts_use_their_own_groups(dev: StackRun) -> None:
    roles = group_roles(dev)
    assert [roles[g] for g in one(dev, "LoadBalancer", "alb-lb").inputs["securityGroups"]] == [
        "alb"
    ]
    for template, role in (
        ("gateway-lt", "gateway"),
        ("scheduler-lt", "scheduler"),
        ("workers-lt", "worker"),
    ):
        interface = host_interface(dev, template)
        assert [roles[g] for g in interface["securityGroups"]] == [role]
    for mount in of_short_type(dev, "MountTarget"):
        assert [roles[g] for g in mount.inputs["securityGroups"]] == ["efs"]
