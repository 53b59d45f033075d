"""SchedulerHost: the one host that runs every user's Dask scheduler.

A node agent on it starts schedulers in the scheduler port range on request of the
gateway; it is a plain instance (EC2 recovers it automatically) in a private subnet.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pulumi
import pulumi_aws as aws

from components.host import single_host
from daskplatform.settings import PlatformSettings


class SchedulerHost(pulumi.ComponentResource):
    instance: aws.ec2.Instance

    def __init__(
        self,
        name: str,
        settings: PlatformSettings,
        *,
        subnet_id: pulumi.Input[str],
        security_group_id: pulumi.Input[str],
        instance_profile_arn: pulumi.Input[str],
        user_data: pulumi.Output[str],
        tags: Mapping[str, str],
        depends_on: Sequence[pulumi.Resource] = (),
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("daskplatform:aws:SchedulerHost", name, None, opts)
        self.instance = single_host(
            name,
            role="scheduler",
            instance_type=settings.scheduler.instance_type,
            subnet_id=subnet_id,
            user_data=user_data,
            security_group_id=security_group_id,
            instance_profile_arn=instance_profile_arn,
            tags=tags,
            parent=self,
            depends_on=list(depends_on),
        ).instance
        self.register_outputs(
            {"instance_id": self.instance.id, "private_ip": self.instance.private_ip}
        )
