"""GatewayHost: JupyterHub + dask-gateway-server, the runtime settings it publishes, and
the volume its state lives on.

The state (the gateway's database and encryption key, JupyterHub's database and cookie
secret) is on a dedicated encrypted EBS volume in the host's AZ, which ``host-setup``
mounts at the gateway's state directory: a replacement instance gets the same volume
(and, through its own network interface, the same address), so running clusters stay
listed and reachable. docs/stack.md says why EBS and what it does not cover. The volume
is protected (removing or replacing it takes a deliberate step) and leaves a snapshot
if it is ever deleted.

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
from daskplatform.host.setup import STATE_DEVICE
from daskplatform.settings import PlatformSettings, RuntimeSettings


class GatewayHost(pulumi.ComponentResource):
    instance: aws.ec2.Instance
    settings_parameter: aws.ssm.Parameter
    state_volume: aws.ebs.Volume

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
        host = single_host(
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
        self.instance = host.instance
        zone = aws.ec2.get_subnet_output(
            id=subnet_id, opts=pulumi.InvokeOutputOptions(parent=self)).availability_zone
        self.state_volume = aws.ebs.Volume(
            f"{name}-state",
            availability_zone=zone,
            size=settings.gateway.state_volume_gib,
            type="gp3",
            encrypted=True,
            final_snapshot=True,
            tags={**tags, "Name": f"{tags.get('project')}-{tags.get('stack')}-gateway-state"},
            opts=pulumi.ResourceOptions(parent=self, protect=True),
        )
        aws.ec2.VolumeAttachment(
            f"{name}-state-attachment",
            device_name=STATE_DEVICE,
            volume_id=self.state_volume.id,
            instance_id=self.instance.id,
            # The gateway stops cleanly (its databases closed) before the volume moves.
            stop_instance_before_detaching=True,
            opts=pulumi.ResourceOptions(parent=self, delete_before_replace=True),
        )
        self.register_outputs(
            {
                "instance_id": self.instance.id,
                "private_ip": self.instance.private_ip,
                "settings_parameter_name": self.settings_parameter.name,
                "state_volume_id": self.state_volume.id,
            }
        )
