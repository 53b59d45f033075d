"""The launch template every host role shares, so the hardening is written once:
IMDSv2 only (hop limit 1, so containers cannot reach the instance role), encrypted gp3
root volume, no public IP, no key pair (admin shells through SSM Session Manager),
detailed monitoring for the one-minute CPU alarms, and instance tags readable from
IMDS so the runtime can learn its stack and role without extra API calls.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from daskplatform.settings import ROOT_VOLUME_GIB
from daskplatform.stack_names import host_tags

AMI = "resolve:ssm:/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
"""Amazon Linux 2023, resolved by EC2 at launch; an instance refresh picks up new AMIs."""
ROOT_DEVICE = "/dev/xvda"


def launch_template(
    name: str,
    *,
    role: str,
    instance_type: str,
    user_data: pulumi.Output[str],
    security_group_id: pulumi.Input[str],
    instance_profile_arn: pulumi.Input[str],
    tags: Mapping[str, str],
    parent: pulumi.Resource,
    network_interface_id: pulumi.Input[str] | None = None,
) -> aws.ec2.LaunchTemplate:
    """A hardened launch template for ``role``; ``network_interface_id`` gives a single
    host its own interface (subnet, address and security group outlive the instance)."""
    instance_tags = host_tags(tags, role)
    interface = ({"device_index": 0, "network_interface_id": network_interface_id,
                  "delete_on_termination": "false"} if network_interface_id else
                 {"device_index": 0, "associate_public_ip_address": "false",
                  "delete_on_termination": "true", "security_groups": [security_group_id]})
    return aws.ec2.LaunchTemplate(
        name,
        image_id=AMI,
        instance_type=instance_type,
        iam_instance_profile={"arn": instance_profile_arn},
        user_data=user_data.apply(lambda text: base64.b64encode(text.encode()).decode()),
        metadata_options={
            "http_endpoint": "enabled",
            "http_tokens": "required",
            "http_put_response_hop_limit": 1,
            "instance_metadata_tags": "enabled",
        },
        block_device_mappings=[
            {
                "device_name": ROOT_DEVICE,
                "ebs": {
                    "volume_type": "gp3",
                    "volume_size": ROOT_VOLUME_GIB,
                    "encrypted": "true",
                    "delete_on_termination": "true",
                },
            }
        ],
        network_interfaces=[interface],
        monitoring={"enabled": True},
        tag_specifications=[
            {"resource_type": kind, "tags": instance_tags} for kind in ("instance", "volume")
        ],
        update_default_version=True,
        tags=dict(tags),
        opts=pulumi.ResourceOptions(parent=parent),
    )


@dataclass(frozen=True)
class SingleHost:
    instance: aws.ec2.Instance
    interface: aws.ec2.NetworkInterface
    """Its address: the same across a replacement (targets, outputs, heartbeats keep it)."""


SINGLE_HOST_IGNORES = ["launchTemplate"]
"""A single host never follows its launch template on its own: a new template version
(user data with a new runtime key, a tag, an AMI) would replace the instance. It changes
in place (tags) or through a roll-out (runtime), and is replaced only on request
(``pulumi up --replace <urn>``), which then launches from the newest template version."""


def single_host(
    name: str,
    *,
    role: str,
    instance_type: str,
    subnet_id: pulumi.Input[str],
    user_data: pulumi.Output[str],
    security_group_id: pulumi.Input[str],
    instance_profile_arn: pulumi.Input[str],
    tags: Mapping[str, str],
    parent: pulumi.Resource,
    depends_on: list[pulumi.Resource] | None = None,
) -> SingleHost:
    """One instance of ``role`` (``<name>-eni``, ``<name>-lt``, ``<name>-instance``) on an
    interface of its own in ``subnet_id``; EC2 recovers it automatically. It carries the
    host tags on the Instance resource too (updated in place), so an update never strips
    the role tag the gateway finds the scheduler host by."""
    interface = aws.ec2.NetworkInterface(
        f"{name}-eni",
        subnet_id=subnet_id,
        security_groups=[security_group_id],
        description=f"{role} host: its private address outlives any one instance",
        tags=host_tags(tags, role),
        opts=pulumi.ResourceOptions(parent=parent),
    )
    template = launch_template(
        f"{name}-lt",
        role=role,
        instance_type=instance_type,
        user_data=user_data,
        security_group_id=security_group_id,
        instance_profile_arn=instance_profile_arn,
        tags=tags,
        parent=parent,
        network_interface_id=interface.id,
    )
    instance = aws.ec2.Instance(
        f"{name}-instance",
        # $Latest: a replacement asked for launches from the newest template version.
        launch_template={"id": template.id, "version": "$Latest"},
        tags=host_tags(tags, role),
        opts=pulumi.ResourceOptions(
            parent=parent, depends_on=depends_on or [], ignore_changes=SINGLE_HOST_IGNORES,
            # Its interface (and the gateway's state volume) can be attached to one
            # instance at a time: a replacement stops and removes the old one first.
            delete_before_replace=True),
    )
    return SingleHost(instance, interface)
