"""Security-group ingress rules, over all three ways ingress is declared."""

from __future__ import annotations

import pytest

from policies.network import INGRESS_RULE, SECURITY_GROUP, SECURITY_GROUP_RULE
from tests.policies.support import run


def inline(**rule: object) -> dict:
    return {"description": "workers", "ingress": [rule]}


def sg_rule(**rule: object) -> dict:
    return {"type": "ingress", "securityGroupId": "sg-1", **rule}


# --------------------------------------------------------------------------- ports


@pytest.mark.parametrize("low, high", [(8000, 8000), (8790, 8790), (9000, 9199), (9200, 9999),
                                       (2049, 2049), (636, 636), (9300, 9310)])
def test_platform_ports_pass(low: int, high: int) -> None:
    props = inline(protocol="tcp", fromPort=float(low), toPort=float(high),
                   securityGroups=["sg-2"])
    assert run("security-group-ingress-ports", SECURITY_GROUP, props) == []


def test_inline_port_outside_table_fails() -> None:
    props = inline(protocol="tcp", fromPort=8787.0, toPort=8787.0, securityGroups=["sg-2"])
    assert run("security-group-ingress-ports", SECURITY_GROUP, props) == [
        ("ingress[0] opens port 8787 from a security group, which is not a platform port; "
        "allowed: 80, 389, 443, 636, 2049, 8000, 8081, 8786, 8790, 8800-8899, 9000-9199, "
        "9200-9999 (DESIGN.md, Ports)")]


def test_range_straddling_two_allowed_ranges_fails() -> None:
    props = {"securityGroupId": "sg-1", "ipProtocol": "tcp", "fromPort": 9100.0,
             "toPort": 9300.0, "referencedSecurityGroupId": "sg-2"}
    [message] = run("security-group-ingress-ports", INGRESS_RULE, props)
    assert message.startswith("opens ports 9100-9300 from a security group, which is not")


def test_udp_and_all_protocols_fail_ports_rule() -> None:
    props = sg_rule(protocol="-1", fromPort=0.0, toPort=0.0, sourceSecurityGroupId="sg-2")
    assert run("security-group-ingress-ports", SECURITY_GROUP_RULE, props) == [
        ("allows protocol all (all ports) from a security group; use one of tcp on a "
        "platform port")]


def test_configured_ranges_replace_defaults() -> None:
    props = inline(protocol="tcp", fromPort=9500.0, toPort=9500.0, securityGroups=["sg-2"])
    config = {"allowedPorts": [443], "allowedPortRanges": [[10000, 10100]]}
    assert len(run("security-group-ingress-ports", SECURITY_GROUP, props, config=config)) == 1


def test_egress_rule_resource_is_not_ingress() -> None:
    props = {"type": "egress", "protocol": "tcp", "fromPort": 22.0, "toPort": 22.0,
             "cidrBlocks": ["0.0.0.0/0"]}
    for rule in ("security-group-ingress-ports", "no-admin-ports", "public-ingress-only-alb"):
        assert run(rule, SECURITY_GROUP_RULE, props) == []


# --------------------------------------------------------------------------- admin ports


@pytest.mark.parametrize("resource_type, props", [
    (SECURITY_GROUP, inline(protocol="tcp", fromPort=22.0, toPort=22.0,
                            cidrBlocks=["10.0.0.0/8"])),
    (SECURITY_GROUP_RULE, sg_rule(protocol="tcp", fromPort=22.0, toPort=22.0,
                                  cidrBlocks=["10.0.0.0/8"])),
    (INGRESS_RULE, {"ipProtocol": "tcp", "fromPort": 22.0, "toPort": 22.0,
                    "cidrIpv4": "10.0.0.0/8"}),
])
def test_ssh_fails_on_every_ingress_form(resource_type: str, props: dict) -> None:
    [message] = run("no-admin-ports", resource_type, props)
    assert message.endswith("opens port 22 (SSH) from 10.0.0.0/8; remove it and use SSM "
                            "Session Manager for shells")


def test_rdp_inside_a_wide_range_fails() -> None:
    props = inline(protocol="tcp", fromPort=3000.0, toPort=4000.0, securityGroups=["sg-2"])
    assert run("no-admin-ports", SECURITY_GROUP, props) == [
        ("ingress[0] opens port 3389 (RDP) from a security group; remove it and use SSM "
        "Session Manager for shells")]


def test_no_admin_port_passes() -> None:
    props = inline(protocol="tcp", fromPort=443.0, toPort=443.0, cidrBlocks=["10.0.0.0/8"])
    assert run("no-admin-ports", SECURITY_GROUP, props) == []


# --------------------------------------------------------------------------- all protocols


def test_all_protocols_from_cidr_fails() -> None:
    props = {"ipProtocol": "-1", "cidrIpv6": "2001:db8::/32"}
    assert run("no-all-protocols-from-cidr", INGRESS_RULE, props) == [
        ("allows all protocols from 2001:db8::/32; allow tcp on the needed port instead, "
        "or reference a security group")]


def test_all_protocols_from_security_group_is_not_a_cidr() -> None:
    props = inline(protocol="all", fromPort=0.0, toPort=0.0, self=True)
    assert run("no-all-protocols-from-cidr", SECURITY_GROUP, props) == []


# --------------------------------------------------------------------------- public ingress


def test_world_on_a_host_group_fails() -> None:
    props = inline(protocol="tcp", fromPort=8000.0, toPort=8000.0, cidrBlocks=["0.0.0.0/0"])
    assert run("public-ingress-only-alb", SECURITY_GROUP, props, name="platform-gateway") == [
        ("ingress[0] opens port 8000 to 0.0.0.0/0 on a security group that is not the ALB's; "
        "reference a security group or list specific CIDRs (dask-platform:allowedCidrs)")]


def test_world_on_alb_https_passes() -> None:
    props = {"securityGroupId": "sg-1", "ipProtocol": "tcp", "fromPort": 443.0,
             "toPort": 443.0, "cidrIpv4": "0.0.0.0/0"}
    assert run("public-ingress-only-alb", INGRESS_RULE, props,
               name="platform-in-allowed-0-to-alb-443") == []


def test_world_ipv6_on_alb_other_port_fails() -> None:
    props = {"description": "ALB", "ingress": [
        {"protocol": "tcp", "fromPort": 8080.0, "toPort": 8080.0, "ipv6CidrBlocks": ["::/0"]}]}
    assert run("public-ingress-only-alb", SECURITY_GROUP, props, name="edge") == [
        "ingress[0] opens port 8080 (tcp) to ::/0; the ALB may be public only on tcp 80, 443"]


def test_alb_marker_is_a_word_not_a_substring() -> None:
    props = inline(protocol="tcp", fromPort=443.0, toPort=443.0, cidrBlocks=["0.0.0.0/0"])
    assert run("public-ingress-only-alb", SECURITY_GROUP, props, name="balbo") != []


def test_specific_cidr_is_not_public() -> None:
    props = inline(protocol="tcp", fromPort=443.0, toPort=443.0, cidrBlocks=["10.20.0.0/16"])
    assert run("public-ingress-only-alb", SECURITY_GROUP, props, name="platform-gateway") == []
