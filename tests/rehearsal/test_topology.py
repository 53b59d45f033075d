"""Where the rehearsal puts each host: the stack's subnets, its placement of hosts and
the ALB's scheme, the user inside allowedCidrs."""

from __future__ import annotations

import ipaddress

import pytest

from daskplatform.network_plan import subnet_cidrs
from daskplatform.rehearsal.topology import build_topology
from daskplatform.settings import load_settings
from tests.test_settings import REQUIRED


def test_hosts_sit_where_the_stack_puts_them() -> None:
    settings = load_settings(REQUIRED)
    _, private = subnet_cidrs(settings.vpc_cidr)
    top = build_topology(settings, workers=3)
    assert [h.namespace for h in top.hosts] == [
        "dp-alb", "dp-gateway", "dp-scheduler", "dp-worker-1", "dp-worker-2", "dp-worker-3",
        "dp-client", "dp-user", "dp-aws", "dp-ipa"]
    addresses = [h.address for h in top.hosts]
    assert len(set(addresses)) == len(addresses)
    for host in top.hosts:
        if host.subnet:
            assert ipaddress.ip_address(host.address) in ipaddress.ip_network(host.subnet)
    # The stack pins both single hosts to the first private subnet and spreads workers.
    assert top.host("gateway").subnet == top.host("scheduler").subnet == private[0]
    assert {w.subnet for w in top.workers} == set(private)
    # allowedCidrs are private in the dev settings: an internal ALB.
    assert top.host("alb").subnet == private[0]
    assert ipaddress.ip_address(top.host("user").address) in ipaddress.ip_network(
        REQUIRED["allowedCidrs"][0])
    assert {h.name: h.groups for h in top.hosts if h.groups} == {
        "alb": ("alb",), "gateway": ("gateway",), "scheduler": ("scheduler",),
        "worker-1": ("worker",), "worker-2": ("worker",), "worker-3": ("worker",),
        "client": ("client",)}


def test_an_internet_facing_alb_sits_in_a_public_subnet() -> None:
    settings = load_settings({**REQUIRED, "allowedCidrs": ["81.2.69.0/24"]})
    public, _ = subnet_cidrs(settings.vpc_cidr)
    top = build_topology(settings, workers=2)
    assert top.host("alb").subnet == public[0]
    assert top.host("user").address == "81.2.69.10"


def test_a_user_needs_room_in_the_first_allowed_range() -> None:
    settings = load_settings({**REQUIRED, "allowedCidrs": ["10.20.0.7/32"]})
    with pytest.raises(ValueError, match="first allowedCidrs range"):
        build_topology(settings, workers=2)
