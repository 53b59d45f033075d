"""The whole platform composed in one stack: settings -> components -> outputs.

Names other parts must agree on (the settings parameter, the secrets, the worker
group, the log groups, the metrics namespace) are fixed here from the project and stack
names, so IAM policies and the runtime settings can name them before the resources
exist, and no dependency cycle forms.
"""

from __future__ import annotations

import pulumi

from components.aws_context import AwsContext
from components.bootstrap import user_data
from components.data_roles import DataRoles
from components.drop_queue import DropQueue
from components.gateway_host import GatewayHost
from components.identity import Identity, IdentityInputs
from components.load_balancer import LoadBalancer
from components.monitoring import Monitoring
from components.network import Network
from components.scheduler_host import SchedulerHost
from components.security_groups import SecurityGroups
from components.storage import Storage
from components.worker_pool import WorkerPool
from daskplatform.runtime_version import source_version
from daskplatform.settings import SERVICE_PREFIX, STACK_TAG, PlatformSettings
from daskplatform.stack_names import StackNames


def common_tags(settings: PlatformSettings) -> dict[str, str]:
    """Tags on every taggable resource: the user's, then ours (ours win)."""
    return {
        **settings.tags,
        "project": pulumi.get_project(),
        STACK_TAG: pulumi.get_stack(),
        "managed-by": "pulumi",
    }


def build(settings: PlatformSettings) -> None:
    """Declare every component and export the stack outputs."""
    names = StackNames(pulumi.get_project(), pulumi.get_stack())
    parameter_name = names.settings_parameter
    log_group_prefix = names.log_group_prefix
    metrics_namespace = names.metrics_namespace
    worker_asg_name = names.worker_asg
    runtime_version = source_version()
    runtime_settings = settings.runtime(names.ldap_secret, runtime_version=runtime_version,
                                        **names.runtime_names())
    tags = common_tags(settings)
    context = AwsContext.lookup()
    # Named up front: the gateway's policy and user data need it before Monitoring exists.
    alert_topic_arn = context.arn("sns", names.alert_topic)

    network = Network("network", settings, context, tags)
    groups = SecurityGroups("security", settings, network.vpc_id, tags)
    storage = Storage("storage", context, network.private_subnet_ids, groups.ids["efs"], tags,
                      runtime_version=runtime_version)
    identity = Identity(
        "identity",
        settings,
        context,
        IdentityInputs(
            settings_parameter_name=parameter_name,
            ldap_secret_name=names.ldap_secret,
            agent_token_secret_name=names.agent_token_secret,
            worker_asg_name=worker_asg_name,
            log_group_prefix=log_group_prefix,
            metrics_namespace=metrics_namespace,
            artifacts_bucket_arn=storage.buckets["artifacts"].arn,
            file_system_arn=storage.file_system.arn,
            bucket_arns={kind: bucket.arn for kind, bucket in storage.buckets.items()},
            alert_topic_arn=alert_topic_arn,
            drop_queue_name=names.drop_queue,
            pipeline_password_secret_name=names.pipeline_password_secret,
        ),
        tags,
    )
    DataRoles(
        "data",
        settings.data_access,
        role_names=names.data_roles(),
        bucket_arns={kind: bucket.arn for kind, bucket in storage.buckets.items()},
        gateway_role=identity.roles["gateway"],
        tags=tags,
    )
    drops = DropQueue(
        "drops",
        queue_name=names.drop_queue,
        dead_letter_name=names.drop_dead_letters,
        bucket_id=storage.buckets["raw"].id,
        bucket_arn=storage.buckets["raw"].arn,
        pipeline=settings.pipeline,
        context=context,
        tags=tags,
    )
    # A host boots only once it can reach AWS and its file systems, and the runtime it
    # installs is uploaded.
    boot_after = [*network.egress_ready, *storage.mount_targets, storage.runtime_package]

    def host(role: str) -> dict:
        """The per-role arguments every host component takes."""
        return {
            "depends_on": boot_after,
            "security_group_id": groups.ids[role],
            "instance_profile_arn": identity.instance_profiles[role].arn,
            "tags": tags,
            "user_data": user_data(
                role,
                region=context.region,
                settings_parameter_name=parameter_name,
                artifacts_bucket=storage.buckets["artifacts"].bucket,
                runtime_version=runtime_version,
                file_system_id=storage.file_system.id,
                shared_access_point_id=storage.shared_access_point.id,
                homes_access_point_id=storage.homes_access_point.id,
                log_group_name=names.log_group(role),
                metrics_namespace=metrics_namespace,
                **({"audit_bucket": storage.buckets["audit"].bucket,
                    "alert_topic_arn": alert_topic_arn,
                    "drop_queue_url": drops.queue.url,
                    "raw_bucket": storage.buckets["raw"].bucket,
                    "processed_bucket": storage.buckets["processed"].bucket,
                    "pipeline_password_secret": names.pipeline_password_secret}
                   if role == "gateway" else {}),
            ),
        }

    gateway = GatewayHost(
        "gateway",
        settings,
        parameter_name=parameter_name,
        runtime_settings=runtime_settings,
        subnet_id=network.private_subnet_ids[0],
        **host("gateway"),
    )
    SchedulerHost(
        "scheduler", settings, subnet_id=network.private_subnet_ids[0], **host("scheduler")
    )
    workers = WorkerPool(
        "workers",
        settings,
        asg_name=worker_asg_name,
        subnet_ids=network.private_subnet_ids,
        metrics_namespace=metrics_namespace,
        **host("worker"),
    )
    alb = LoadBalancer(
        "alb",
        settings,
        vpc_id=network.vpc_id,
        # Internal when every allowedCidr is private (settings.internal_alb).
        subnet_ids=(network.private_subnet_ids if settings.internal_alb
                    else network.public_subnet_ids),
        security_group_id=groups.ids["alb"],
        gateway_instance_id=gateway.instance.id,
        access_log_bucket=storage.buckets["audit"].bucket,
        tags=tags,
        depends_on=[storage.audit_policy, *network.egress_ready],
    )
    monitoring = Monitoring(
        "monitoring",
        dashboard_name=names.prefix,
        topic_name=names.alert_topic,
        alert_emails=settings.alert_emails,
        settings=settings.monitoring,
        region=context.region,
        log_group_prefix=log_group_prefix,
        metrics_namespace=metrics_namespace,
        worker_asg_name=workers.group.name,
        alb_arn_suffix=alb.alb.arn_suffix,
        target_group_arn_suffix=alb.target_group.arn_suffix,
        file_system_id=storage.file_system.id,
        tags=tags,
    )

    pulumi.export("vpc_id", network.vpc_id)
    pulumi.export("private_subnet_ids", network.private_subnet_ids)
    pulumi.export("public_subnet_ids", network.public_subnet_ids)
    pulumi.export("hub_url", alb.url)
    pulumi.export("gateway_url", pulumi.Output.concat(alb.url, SERVICE_PREFIX))
    pulumi.export(
        "gateway_scheduler_address",
        pulumi.Output.concat(
            "gateway://", gateway.instance.private_ip, ":", str(settings.ports.gateway_tls)
        ),
    )
    for kind, bucket in storage.buckets.items():
        pulumi.export(f"{kind}_bucket_name", bucket.bucket)
        pulumi.export(f"{kind}_bucket_arn", bucket.arn)
    pulumi.export("efs_id", storage.file_system.id)
    pulumi.export("worker_asg_name", workers.group.name)
    pulumi.export("alert_topic_arn", monitoring.topic.arn)
    pulumi.export("dashboard_name", monitoring.dashboard.dashboard_name)
    pulumi.export("drop_queue_url", drops.queue.url)
    pulumi.export("settings_parameter_name", gateway.settings_parameter.name)
    pulumi.export("client_security_group_id", groups.ids["client"])
