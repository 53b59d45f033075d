"""Network: create a VPC with public and private subnets in two AZs, or adopt one.

Created: one NAT gateway per AZ, so an AZ outage does not cut the other AZ's hosts off
from AWS APIs and package mirrors; an S3 gateway endpoint keeps bucket traffic off the
NATs; VPC flow logs go to CloudWatch (90 days). Adopted (the team's A01 VPC): nothing is
created, since routes, endpoints and flow logs belong to the VPC's owner.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import pulumi
import pulumi_aws as aws

from components.aws_context import AwsContext
from daskplatform.network_plan import subnet_cidrs
from daskplatform.settings import PlatformSettings

LOG_RETENTION_DAYS = 90


class Network(pulumi.ComponentResource):
    vpc_id: pulumi.Output[str]
    public_subnet_ids: list[pulumi.Output[str]]
    private_subnet_ids: list[pulumi.Output[str]]
    egress_ready: list[pulumi.Resource]
    """What a host in a private subnet needs before it can reach AWS APIs and package
    mirrors at boot (the internet gateway, the NAT routes, the S3 endpoint); empty for
    an adopted VPC, whose routes already exist."""

    def __init__(
        self,
        name: str,
        settings: PlatformSettings,
        context: AwsContext,
        tags: Mapping[str, str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("daskplatform:aws:Network", name, None, opts)
        self.egress_ready = []
        if settings.adopts_vpc:
            self.vpc_id = pulumi.Output.from_input(settings.vpc_id)
            self.public_subnet_ids = [
                pulumi.Output.from_input(s) for s in settings.public_subnet_ids
            ]
            self.private_subnet_ids = [
                pulumi.Output.from_input(s) for s in settings.private_subnet_ids
            ]
        else:
            self._create(name, settings, context, dict(tags))
        self.register_outputs(
            {
                "vpc_id": self.vpc_id,
                "public_subnet_ids": self.public_subnet_ids,
                "private_subnet_ids": self.private_subnet_ids,
            }
        )

    def _create(
        self, name: str, settings: PlatformSettings, context: AwsContext, tags: dict[str, str]
    ) -> None:
        child = pulumi.ResourceOptions(parent=self)
        zones = aws.get_availability_zones_output(
            state="available", opts=pulumi.InvokeOutputOptions(parent=self)
        )
        vpc = aws.ec2.Vpc(
            f"{name}-vpc",
            cidr_block=settings.vpc_cidr,
            enable_dns_support=True,
            enable_dns_hostnames=True,
            tags={**tags, "Name": f"{name}-vpc"},
            opts=child,
        )
        self.vpc_id = vpc.id
        igw = aws.ec2.InternetGateway(f"{name}-igw", vpc_id=vpc.id, tags=tags, opts=child)
        self.egress_ready.append(igw)
        public_routes = aws.ec2.RouteTable(
            f"{name}-public-rt", vpc_id=vpc.id, tags=tags, opts=child
        )
        aws.ec2.Route(
            f"{name}-public-default",
            route_table_id=public_routes.id,
            destination_cidr_block="0.0.0.0/0",
            gateway_id=igw.id,
            opts=child,
        )
        route_tables = [public_routes]
        self.public_subnet_ids, self.private_subnet_ids = [], []
        for index, (public_cidr, private_cidr) in enumerate(
            zip(*subnet_cidrs(settings.vpc_cidr), strict=True)
        ):
            zone = zones.names[index]
            public = aws.ec2.Subnet(
                f"{name}-public-{index}",
                vpc_id=vpc.id,
                cidr_block=public_cidr,
                availability_zone=zone,
                map_public_ip_on_launch=False,
                tags={**tags, "Name": f"{name}-public-{index}", "tier": "public"},
                opts=child,
            )
            aws.ec2.RouteTableAssociation(
                f"{name}-public-{index}-rta",
                subnet_id=public.id,
                route_table_id=public_routes.id,
                opts=child,
            )
            nat_ip = aws.ec2.Eip(f"{name}-nat-{index}-eip", domain="vpc", tags=tags, opts=child)
            nat = aws.ec2.NatGateway(
                f"{name}-nat-{index}",
                allocation_id=nat_ip.id,
                subnet_id=public.id,
                tags=tags,
                opts=pulumi.ResourceOptions(parent=self, depends_on=[igw]),
            )
            private = aws.ec2.Subnet(
                f"{name}-private-{index}",
                vpc_id=vpc.id,
                cidr_block=private_cidr,
                availability_zone=zone,
                map_public_ip_on_launch=False,
                tags={**tags, "Name": f"{name}-private-{index}", "tier": "private"},
                opts=child,
            )
            private_routes = aws.ec2.RouteTable(
                f"{name}-private-{index}-rt", vpc_id=vpc.id, tags=tags, opts=child
            )
            private_default = aws.ec2.Route(
                f"{name}-private-{index}-default",
                route_table_id=private_routes.id,
                destination_cidr_block="0.0.0.0/0",
                nat_gateway_id=nat.id,
                opts=child,
            )
            private_association = aws.ec2.RouteTableAssociation(
                f"{name}-private-{index}-rta",
                subnet_id=private.id,
                route_table_id=private_routes.id,
                opts=child,
            )
            self.egress_ready += [private_default, private_association]
            route_tables.append(private_routes)
            self.public_subnet_ids.append(public.id)
            self.private_subnet_ids.append(private.id)
        s3_endpoint = aws.ec2.VpcEndpoint(
            f"{name}-s3-endpoint",
            vpc_id=vpc.id,
            vpc_endpoint_type="Gateway",
            service_name=pulumi.Output.concat("com.amazonaws.", context.region, ".s3"),
            route_table_ids=[rt.id for rt in route_tables],
            tags=tags,
            opts=child,
        )
        self.egress_ready.append(s3_endpoint)
        self._flow_logs(name, vpc, tags)

    def _flow_logs(self, name: str, vpc: aws.ec2.Vpc, tags: dict[str, str]) -> None:
        child = pulumi.ResourceOptions(parent=self)
        log_group = aws.cloudwatch.LogGroup(
            f"{name}-flow-logs", retention_in_days=LOG_RETENTION_DAYS, tags=tags, opts=child
        )
        role = aws.iam.Role(
            f"{name}-flow-logs-role",
            tags=tags,
            opts=child,
            assume_role_policy=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Action": "sts:AssumeRole",
                            "Principal": {"Service": "vpc-flow-logs.amazonaws.com"},
                        }
                    ],
                }
            ),
        )
        aws.iam.RolePolicy(
            f"{name}-flow-logs-policy",
            role=role.id,
            opts=child,
            policy=pulumi.Output.json_dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Action": [
                                "logs:CreateLogStream",
                                "logs:PutLogEvents",
                                "logs:DescribeLogStreams",
                            ],
                            "Resource": pulumi.Output.concat(log_group.arn, ":*"),
                        }
                    ],
                }
            ),
        )
        aws.ec2.FlowLog(
            f"{name}-flow-log",
            vpc_id=vpc.id,
            traffic_type="ALL",
            log_destination_type="cloud-watch-logs",
            log_destination=log_group.arn,
            iam_role_arn=role.arn,
            tags=tags,
            opts=child,
        )
