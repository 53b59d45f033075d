"""LoadBalancer: the ALB in front of the gateway host: internal (in the private subnets,
reached over the team's VPN) when every ``allowedCidrs`` range is private, else
internet-facing.

HTTPS on 443 with a TLS 1.3/1.2-only policy and the ACM certificate; 80 only
redirects to 443. Access logs go to the audit bucket. The target group health-checks
JupyterHub's unauthenticated health endpoint on the gateway port.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pulumi
import pulumi_aws as aws

from components.storage import ALB_LOG_PREFIX
from daskplatform.network_plan import ALB_HEALTH_CHECK_PATH
from daskplatform.settings import PlatformSettings

TLS_POLICY = "ELBSecurityPolicy-TLS13-1-2-2021-06"


class LoadBalancer(pulumi.ComponentResource):
    alb: aws.lb.LoadBalancer
    target_group: aws.lb.TargetGroup
    url: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        settings: PlatformSettings,
        *,
        vpc_id: pulumi.Input[str],
        subnet_ids: Sequence[pulumi.Input[str]],
        security_group_id: pulumi.Input[str],
        gateway_instance_id: pulumi.Input[str],
        access_log_bucket: pulumi.Input[str],
        tags: Mapping[str, str],
        depends_on: Sequence[pulumi.Resource] = (),
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("daskplatform:aws:LoadBalancer", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        ports = settings.ports
        self.alb = aws.lb.LoadBalancer(
            f"{name}-lb",
            load_balancer_type="application",
            internal=settings.internal_alb,
            subnets=list(subnet_ids),
            security_groups=[security_group_id],
            drop_invalid_header_fields=True,
            idle_timeout=3600,
            access_logs={"bucket": access_log_bucket, "prefix": ALB_LOG_PREFIX, "enabled": True},
            tags=dict(tags),
            # Log delivery is checked when the ALB is created: the audit policy first.
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(depends_on)),
        )
        self.target_group = aws.lb.TargetGroup(
            f"{name}-gateway",
            port=ports.gateway_http,
            protocol="HTTP",
            target_type="instance",
            vpc_id=vpc_id,
            deregistration_delay=30,
            tags=dict(tags),
            opts=child,
            health_check={
                "enabled": True,
                "path": ALB_HEALTH_CHECK_PATH,
                "port": "traffic-port",
                "protocol": "HTTP",
                "matcher": "200",
                "interval": 30,
                "healthy_threshold": 2,
                "unhealthy_threshold": 3,
            },
        )
        aws.lb.TargetGroupAttachment(
            f"{name}-gateway-instance",
            target_group_arn=self.target_group.arn,
            target_id=gateway_instance_id,
            port=ports.gateway_http,
            opts=child,
        )
        aws.lb.Listener(
            f"{name}-https",
            load_balancer_arn=self.alb.arn,
            port=ports.https,
            protocol="HTTPS",
            ssl_policy=TLS_POLICY,
            certificate_arn=settings.certificate_arn,
            tags=dict(tags),
            opts=child,
            default_actions=[{"type": "forward", "target_group_arn": self.target_group.arn}],
        )
        aws.lb.Listener(
            f"{name}-http-redirect",
            load_balancer_arn=self.alb.arn,
            port=ports.http,
            protocol="HTTP",
            tags=dict(tags),
            opts=child,
            default_actions=[
                {
                    "type": "redirect",
                    "redirect": {
                        "protocol": "HTTPS",
                        "port": str(ports.https),
                        "status_code": "HTTP_301",
                    },
                }
            ],
        )
        self.url = pulumi.Output.concat("https://", self.alb.dns_name)
        self.register_outputs({"url": self.url, "alb_arn": self.alb.arn})
