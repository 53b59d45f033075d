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


# --------------------------------------------------------------------------- several rules


def test_a_later_rule_open_to_the_world_is_found_after_a_private_one() -> None:
    props = {"description": "gateway", "ingress": [
        {"protocol": "tcp", "fromPort": 8000.0, "toPort": 8000.0, "securityGroups": ["sg-2"]},
        {"protocol": "tcp", "fromPort": 8000.0, "toPort": 8000.0,
         "cidrBlocks": ["10.0.0.0/8", "0.0.0.0/0"]},
    ]}
    assert run("public-ingress-only-alb", SECURITY_GROUP, props, name="platform-gateway") == [
        ("ingress[1] opens port 8000 to 0.0.0.0/0 on a security group that is not the ALB's; "
         "reference a security group or list specific CIDRs (dask-platform:allowedCidrs)")]


def test_every_bad_rule_of_a_group_is_reported_in_order() -> None:
    props = {"description": "workers", "ingress": [
        {"protocol": "tcp", "fromPort": 9200.0, "toPort": 9999.0, "self": True},
        {"protocol": "udp", "fromPort": 9200.0, "toPort": 9200.0, "self": True},
        {"protocol": "tcp", "fromPort": 22.0, "toPort": 22.0, "prefixListIds": ["pl-1"]},
    ]}
    assert run("security-group-ingress-ports", SECURITY_GROUP, props) == [
        "ingress[1] allows protocol udp (port 9200) from a security group; use one of tcp on "
        "a platform port",
        "ingress[2] opens port 22 from a security group, which is not a platform port; "
        "allowed: 80, 389, 443, 636, 2049, 8000, 8081, 8786, 8790, 8800-8899, 9000-9199, "
        "9200-9999 (DESIGN.md, Ports)"]
    assert run("no-admin-ports", SECURITY_GROUP, props) == [
        "ingress[2] opens port 22 (SSH) from a security group; remove it and use SSM Session "
        "Manager for shells"]


# --------------------------------------------------------------------------- the ALB's edge


@pytest.mark.parametrize("protocol, low, high, shown", [
    ("udp", 443.0, 443.0, "port 443 (udp)"),
    ("17", 443.0, 443.0, "port 443 (udp)"),
    ("tcp", 80.0, 443.0, "ports 80-443 (tcp)"),
    ("tcp", 443.0, 444.0, "ports 443-444 (tcp)"),
    ("tcp", 444.0, 443.0, "ports 444-443 (tcp)"),  # reversed: shown as declared
    ("tcp", 22.0, 22.0, "port 22 (tcp)"),
    ("132", 443.0, 443.0, "port 443 (132)"),  # SCTP
    ("-1", 0.0, 0.0, "all ports (all)"),
])
def test_the_alb_is_public_only_on_single_tcp_ports(protocol: str, low: float, high: float,
                                                     shown: str) -> None:
    props = {"securityGroupId": "sg-1", "ipProtocol": protocol, "fromPort": low,
             "toPort": high, "cidrIpv4": "0.0.0.0/0"}
    assert run("public-ingress-only-alb", INGRESS_RULE, props, name="platform-alb-in") == [
        f"opens {shown} to 0.0.0.0/0; the ALB may be public only on tcp 80, 443"]


@pytest.mark.parametrize("protocol, port", [("tcp", 80.0), ("TCP", 443.0), ("6", 443.0)])
def test_the_alb_may_be_public_on_80_and_443(protocol: str, port: float) -> None:
    props = sg_rule(protocol=protocol, fromPort=port, toPort=port,
                    cidrBlocks=["0.0.0.0/0"], ipv6CidrBlocks=["::/0"])
    assert run("public-ingress-only-alb", SECURITY_GROUP_RULE, props, name="alb-in") == []


@pytest.mark.parametrize("props, name", [
    ({"name": "platform-alb"}, "sg"),
    ({"namePrefix": "ALB-"}, "sg"),
    ({"tags": {"Name": "edge alb"}}, "sg"),
    ({"tags": {"Role": "alb"}}, "sg"),
    ({"description": "The ALB's group"}, "sg"),
    ({}, "platform_alb"),
])
def test_the_alb_is_recognised_by_any_of_its_names(props: dict, name: str) -> None:
    group = {**props, "ingress": [{"protocol": "tcp", "fromPort": 443.0, "toPort": 443.0,
                                   "cidrBlocks": ["0.0.0.0/0"]}]}
    assert run("public-ingress-only-alb", SECURITY_GROUP, group, name=name) == []
    assert run("public-ingress-only-alb", SECURITY_GROUP,
               {"ingress": group["ingress"], "tags": {"Name": "x", "Role": "gateway"}},
               name="gateway") != []


def test_a_configured_public_port_replaces_the_defaults() -> None:
    props = sg_rule(protocol="tcp", fromPort=443.0, toPort=443.0, cidrBlocks=["0.0.0.0/0"])
    assert run("public-ingress-only-alb", SECURITY_GROUP_RULE, props, name="alb",
               config={"publicPorts": [8443]}) == [
        "opens port 443 (tcp) to 0.0.0.0/0; the ALB may be public only on tcp 8443"]


# --------------------------------------------------------------------------- port edges


@pytest.mark.parametrize("low, high", [(8800, 8899), (9000, 9000), (9199, 9199), (9999, 9999)])
def test_ranges_inside_an_allowed_range_up_to_its_ends_pass(low: int, high: int) -> None:
    props = sg_rule(protocol="tcp", fromPort=float(low), toPort=float(high),
                    sourceSecurityGroupId="sg-2")
    assert run("security-group-ingress-ports", SECURITY_GROUP_RULE, props) == []


@pytest.mark.parametrize("low, high, shown", [
    (8999, 9199, "ports 8999-9199"), (9000, 10000, "ports 9000-10000"),
    (442, 443, "ports 442-443"), (443, 444, "ports 443-444"), (8787, 8787, "port 8787")])
def test_ranges_past_an_allowed_end_fail(low: int, high: int, shown: str) -> None:
    props = {"ipProtocol": "tcp", "fromPort": float(low), "toPort": float(high),
             "referencedSecurityGroupId": "sg-2"}
    [message] = run("security-group-ingress-ports", INGRESS_RULE, props)
    assert message.startswith(f"opens {shown} from a security group, which is not a platform")


def test_rules_admitting_nobody_are_still_checked() -> None:
    props = inline(protocol="tcp", fromPort=8787.0, toPort=8787.0)
    [message] = run("security-group-ingress-ports", SECURITY_GROUP, props)
    assert message.startswith("ingress[0] opens port 8787 from nowhere, which is not")


@pytest.mark.parametrize("props", [
    inline(protocol="tcp", fromPort=20.0, toPort=30.0, cidrBlocks=["10.0.0.0/8"]),
    inline(protocol="udp", fromPort=22.0, toPort=22.0, cidrBlocks=["10.0.0.0/8"]),
    inline(protocol="-1", fromPort=0.0, toPort=0.0, cidrBlocks=["10.0.0.0/8"]),
    inline(fromPort=0.0, toPort=0.0, cidrBlocks=["10.0.0.0/8"]),  # no protocol: all
])
def test_ssh_is_found_inside_ranges_udp_and_all_protocols(props: dict) -> None:
    assert [m.split(" from ")[0] for m in run("no-admin-ports", SECURITY_GROUP, props)][:1] == [
        "ingress[0] opens port 22 (SSH)"]


def test_icmp_and_ports_beside_ssh_are_not_ssh() -> None:
    for props in (inline(protocol="icmp", fromPort=-1.0, toPort=-1.0, cidrBlocks=["10.0.0.0/8"]),
                  inline(protocol="tcp", fromPort=23.0, toPort=3388.0, cidrBlocks=["10.0.0.0/8"]),
                  inline(protocol="tcp", fromPort=3390.0, toPort=3390.0, self=True)):
        assert run("no-admin-ports", SECURITY_GROUP, props) == []


def test_all_protocols_from_a_group_rule_names_its_cidrs() -> None:
    props = sg_rule(protocol="all", cidrBlocks=["10.0.0.0/8"], ipv6CidrBlocks=["fd00::/8"])
    assert run("no-all-protocols-from-cidr", SECURITY_GROUP_RULE, props) == [
        "allows all protocols from 10.0.0.0/8, fd00::/8; allow tcp on the needed port "
        "instead, or reference a security group"]
    assert run("no-all-protocols-from-cidr", SECURITY_GROUP_RULE,
               sg_rule(protocol="tcp", fromPort=443.0, toPort=443.0,
                       cidrBlocks=["10.0.0.0/8"])) == []


INGRESS_SHAPED = {"type": "ingress", "ingress": [{"protocol": "-1", "cidrBlocks": ["0.0.0.0/0"]}],
                  "protocol": "-1", "ipProtocol": "-1", "fromPort": 22.0, "toPort": 22.0,
                  "cidrBlocks": ["0.0.0.0/0"], "cidrIpv4": "0.0.0.0/0"}


@pytest.mark.parametrize("resource_type", ["aws:ec2/instance:Instance",
                                           "aws:s3/bucketV2:BucketV2"])
def test_resources_that_are_not_ingress_are_ignored(resource_type: str) -> None:
    for rule in ("security-group-ingress-ports", "no-admin-ports", "public-ingress-only-alb",
                 "no-all-protocols-from-cidr"):
        assert run(rule, resource_type, INGRESS_SHAPED) == []


def test_types_and_kinds_as_the_engine_sends_them_are_recognised() -> None:
    """Strings built at run time, not the constants' own objects."""
    def fresh(text: str) -> str:
        return "".join(text.partition(":"))
    bad = {"protocol": "tcp", "fromPort": 22.0, "toPort": 22.0, "cidrBlocks": ["10.0.0.0/8"]}
    assert run("no-admin-ports", fresh(SECURITY_GROUP), {"ingress": [bad]}) != []
    assert run("no-admin-ports", fresh(SECURITY_GROUP_RULE),
               {**bad, "type": "".join(["in", "gress"])}) != []
    assert run("no-admin-ports", fresh(INGRESS_RULE),
               {"ipProtocol": "tcp", "fromPort": 22.0, "toPort": 22.0,
                "cidrIpv4": "10.0.0.0/8"}) != []


def test_a_rule_admitting_its_own_group_names_a_security_group() -> None:
    props = sg_rule(protocol="tcp", fromPort=8787.0, toPort=8787.0, self=True)
    [message] = run("security-group-ingress-ports", SECURITY_GROUP_RULE, props)
    assert message.startswith("opens port 8787 from a security group, which is not")


def test_allowed_ports_sent_as_floats_are_shown_as_whole_ports() -> None:
    props = inline(protocol="tcp", fromPort=22.0, toPort=22.0, self=True)
    config = {"allowedPorts": [443.0, 8000.0], "allowedPortRanges": [[9000.0, 9199.0]]}
    [message] = run("security-group-ingress-ports", SECURITY_GROUP, props, config=config)
    assert message.endswith("allowed: 443, 8000, 9000-9199 (DESIGN.md, Ports)")


def test_a_reversed_configured_range_is_shown_as_written() -> None:
    props = inline(protocol="tcp", fromPort=9100.0, toPort=9100.0, self=True)
    config = {"allowedPorts": [], "allowedPortRanges": [[9199, 9000]]}
    [message] = run("security-group-ingress-ports", SECURITY_GROUP, props, config=config)
    assert message.endswith("allowed: 9199-9000 (DESIGN.md, Ports)")


def test_a_configured_extra_protocol_is_checked_on_its_ports() -> None:
    config = {"allowedProtocols": ["tcp", "132"]}
    sctp = inline(protocol="132", fromPort=8000.0, toPort=8000.0, self=True)
    assert run("security-group-ingress-ports", SECURITY_GROUP, sctp, config=config) == []
    assert run("no-admin-ports", SECURITY_GROUP, inline(protocol="132", fromPort=22.0,
                                                         toPort=22.0, self=True)) == []
    assert run("no-all-protocols-from-cidr", SECURITY_GROUP,
               inline(protocol="132", fromPort=22.0, toPort=22.0,
                      cidrBlocks=["10.0.0.0/8"])) == []


@pytest.mark.parametrize("ranges, allowed", [([[0, 65535]], True), ([[1, 65535]], False),
                                             ([[0, 65534]], False)])
def test_allowing_every_protocol_needs_every_port(ranges: list, allowed: bool) -> None:
    config = {"allowedProtocols": ["all"], "allowedPorts": [], "allowedPortRanges": ranges}
    props = inline(protocol="-1", fromPort=0.0, toPort=0.0, self=True)
    assert (run("security-group-ingress-ports", SECURITY_GROUP, props, config=config) == []
            ) is allowed
