"""GatewayHost: JupyterHub + dask-gateway-server, and the runtime settings it publishes.

The host-facing part of the settings (quotas, shapes, ports, timeouts, the names of
the secrets, the worker group and the stack, never a secret value) goes into an SSM
parameter that every host reads at
start (``--settings ssm://<name>``); the policy pack can check it in preview and the
gateway can reload it without a new instance.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pulumi
import pulumi_aws as aws

from components.host import single_host
from daskplatform.settings import PlatformSettings, RuntimeSettings


class GatewayHost(pulumi.ComponentResource):
    instance: aws.ec2.Instance
    settings_parameter: aws.ssm.Parameter

    def __init__(
        self,
        name: str,
        settings: PlatformSettings,
        *,
        parameter_name: str,
        runtime_settings: RuntimeSettings,
        subnet_id: pulumi.Input[str],
        security_group_id: pulumi.Input[str],
        instance_profile_arn: pulumi.Input[str],
        user_data: pulumi.Output[str],
        tags: Mapping[str, str],
        depends_on: Sequence[pulumi.Resource] = (),
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("daskplatform:aws:GatewayHost", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        # Built from config and fixed names alone (secrets are named, not referenced by
        # ARN), so the value is known in preview and the policy pack can check it.
        runtime_json = runtime_settings.to_json()
        self.settings_parameter = aws.ssm.Parameter(
            f"{name}-settings",
            name=parameter_name,
            type="String",
            value=runtime_json,
            tier="Intelligent-Tiering",
            data_type="text",
            tags=dict(tags),
            opts=child,
            description="dask-platform runtime settings (no secrets), read by every host",
        )
        self.instance = single_host(
            name,
            role="gateway",
            instance_type=settings.gateway.instance_type,
            subnet_id=subnet_id,
            user_data=user_data,
            security_group_id=security_group_id,
            instance_profile_arn=instance_profile_arn,
            tags=tags,
            parent=self,
            depends_on=[self.settings_parameter, *depends_on],
        )
        self.register_outputs(
            {
                "instance_id": self.instance.id,
                "private_ip": self.instance.private_ip,
                "settings_parameter_name": self.settings_parameter.name,
            }
        )
