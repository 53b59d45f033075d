"""Network: two AZs with public and private subnets, NAT per AZ, or an adopted VPC."""

from __future__ import annotations

import ipaddress

from tests.cloud.conftest import ADOPTED_PRIVATE, ADOPTED_PUBLIC, ADOPTED_VPC, of_short_type, one
from tools.mockrun import StackRun


def subnets(run: StackRun, tier: str) -> list:
    return [s for s in of_short_type(run, "Subnet") if s.inputs["tags"]["tier"] == tier]


def test_private_and_public_subnets_each_span_two_distinct_azs(dev: StackRun) -> None:
    for tier in ("public", "private"):
        zones = [s.inputs["availabilityZone"] for s in subnets(dev, tier)]
        assert len(zones) == 2 and len(set(zones)) == 2, (tier, zones)


def test_subnets_lie_in_the_vpc_cidr_and_do_not_overlap(dev: StackRun) -> None:
    vpc = ipaddress.ip_network(one(dev, "Vpc", "network-vpc").inputs["cidrBlock"])
    assert str(vpc) == "10.0.0.0/16"
    blocks = [ipaddress.ip_network(s.inputs["cidrBlock"]) for s in of_short_type(dev, "Subnet")]
    assert all(block.subnet_of(vpc) for block in blocks)
    assert not any(a.overlaps(b) for i, a in enumerate(blocks) for b in blocks[i + 1 :])
    assert not any(s.inputs.get("mapPublicIpOnLaunch") for s in of_short_type(dev, "Subnet"))


def test_each_private_subnet_routes_out_through_the_nat_in_its_own_az(dev: StackRun) -> None:
    by_id = {r.id: r for r in dev.resources}
    routes = {r.inputs["routeTableId"]: r for r in of_short_type(dev, "Route")}
    associations = {
        a.inputs["subnetId"]: a.inputs["routeTableId"]
        for a in of_short_type(dev, "RouteTableAssociation")
    }
    for private in subnets(dev, "private"):
        route = routes[associations[private.id]]
        assert route.inputs["destinationCidrBlock"] == "0.0.0.0/0"
        nat = by_id[route.inputs["natGatewayId"]]
        nat_subnet = by_id[nat.inputs["subnetId"]]
        assert nat_subnet.inputs["tags"]["tier"] == "public"
        assert nat_subnet.inputs["availabilityZone"] == private.inputs["availabilityZone"]
    for public in subnets(dev, "public"):
        route = routes[associations[public.id]]
        assert by_id[route.inputs["gatewayId"]].type == "aws:ec2/internetGateway:InternetGateway"


def test_s3_gateway_endpoint_serves_every_route_table(dev: StackRun) -> None:
    endpoint = one(dev, "VpcEndpoint", "network-s3-endpoint").inputs
    assert endpoint["serviceName"] == "com.amazonaws.eu-west-1.s3"
    assert endpoint["vpcEndpointType"] == "Gateway"
    assert sorted(endpoint["routeTableIds"]) == sorted(
        t.id for t in of_short_type(dev, "RouteTable")
    )


def test_flow_logs_go_to_a_log_group_kept_90_days(dev: StackRun) -> None:
    flow_log = one(dev, "FlowLog", "network-flow-log").inputs
    log_group = one(dev, "LogGroup", "network-flow-logs")
    assert flow_log["vpcId"] == one(dev, "Vpc", "network-vpc").id
    assert flow_log["logDestination"] == log_group.outputs["arn"]
    assert flow_log["trafficType"] == "ALL"
    assert log_group.inputs["retentionInDays"] == 90


def test_adopting_a_vpc_creates_no_vpc_subnet_nat_or_route(custom: StackRun) -> None:
    created = {r.type.rsplit(":", 1)[-1] for r in custom.resources}
    assert not created & {
        "Vpc",
        "Subnet",
        "NatGateway",
        "InternetGateway",
        "Eip",
        "RouteTable",
        "Route",
        "VpcEndpoint",
        "FlowLog",
    }
    assert custom.outputs["vpc_id"] == ADOPTED_VPC
    assert custom.outputs["private_subnet_ids"] == ADOPTED_PRIVATE
    assert custom.outputs["public_subnet_ids"] == ADOPTED_PUBLIC


def test_adopted_subnets_and_vpc_are_used(custom: StackRun) -> None:
    assert {g.inputs["vpcId"] for g in of_short_type(custom, "SecurityGroup")} == {ADOPTED_VPC}
    assert one(custom, "LoadBalancer", "alb-lb").inputs["subnets"] == ADOPTED_PUBLIC
    assert one(custom, "Group", "workers-asg").inputs["vpcZoneIdentifiers"] == ADOPTED_PRIVATE
    assert (
        sorted(m.inputs["subnetId"] for m in of_short_type(custom, "MountTarget"))
        == ADOPTED_PRIVATE
    )
