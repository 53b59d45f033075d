"""Identity: one IAM role and instance profile per host role, least privilege, and
the Secrets Manager secrets: the LDAP bind password and the node agents' token.

Every host may: read the runtime-settings SSM parameter, fetch the runtime package
from the artifacts prefix, mount EFS as an IAM client, put metrics into the platform
namespace, write its platform log group, and be reached by SSM Session Manager (no SSH).
The gateway may also read the LDAP secret, read and put the agent-token secret (it
generates the token on its first start), describe the Auto Scaling groups and
instances (worker nodes, and the scheduler host by its tags), set scale-in protection
on the worker group only, and act as root on EFS (it creates and chowns each user's
home under the homes access point), write daily usage reports and archived homes in
the audit bucket, and publish budget alerts to the alert topic. Its pipeline watcher
may receive, delete and postpone messages of the drop queue only, and read the pipeline
service account's password (a secret created empty, filled out of band). Scheduler and
worker hosts may read the agent token and no other secret. A worker completes its own
launch hook in the worker group once it has booted. No host role reaches the data buckets: user code, the AppsFlyer
pipeline included, works with the short-lived credentials of a data role
(components/data_roles.py) that the gateway vends.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from components.aws_context import AwsContext
from daskplatform.audit_bucket import GATEWAY_PREFIXES
from daskplatform.settings import PlatformSettings

HOST_ROLES = ("gateway", "scheduler", "worker")
ARTIFACTS_PREFIX = "runtime/"
SSM_CORE_POLICY = ":iam::aws:policy/AmazonSSMManagedInstanceCore"
"""The AWS-managed policy Session Manager needs; admin shells replace SSH."""

_EC2_TRUST = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": "sts:AssumeRole",
                "Principal": {"Service": "ec2.amazonaws.com"},
            }
        ],
    }
)


@dataclass(frozen=True)
class IdentityInputs:
    """What the policies point at; names are fixed up front so no resource cycle forms."""

    settings_parameter_name: str
    ldap_secret_name: str
    agent_token_secret_name: str
    worker_asg_name: str
    log_group_prefix: str
    metrics_namespace: str
    artifacts_bucket_arn: pulumi.Input[str]
    file_system_arn: pulumi.Input[str]
    bucket_arns: Mapping[str, pulumi.Input[str]]
    """Bucket ARN by kind (raw, processed, audit, artifacts)."""
    alert_topic_arn: pulumi.Input[str]
    drop_queue_name: str
    """S3 notifications of new raw drops; the gateway host's pipeline watcher consumes it."""
    pipeline_password_secret_name: str


class Identity(pulumi.ComponentResource):
    instance_profiles: dict[str, aws.iam.InstanceProfile]
    roles: dict[str, aws.iam.Role]
    ldap_secret: aws.secretsmanager.Secret
    agent_token_secret: aws.secretsmanager.Secret
    pipeline_password_secret: aws.secretsmanager.Secret

    def __init__(
        self,
        name: str,
        settings: PlatformSettings,
        context: AwsContext,
        inputs: IdentityInputs,
        tags: Mapping[str, str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("daskplatform:aws:Identity", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        tags = dict(tags)
        def secret(suffix: str, secret_name: str, description: str) -> aws.secretsmanager.Secret:
            return aws.secretsmanager.Secret(
                f"{name}-{suffix}", name=secret_name, recovery_window_in_days=7, tags=tags,
                opts=child, description=description)

        self.ldap_secret = secret("ldap-bind-password", inputs.ldap_secret_name,
                                  "LDAP bind password of the gateway's FreeIPA service account")
        if settings.ldap_bind_password is not None:
            aws.secretsmanager.SecretVersion(
                f"{name}-ldap-bind-password-value",
                secret_id=self.ldap_secret.id,
                opts=child,
                secret_string=pulumi.Output.secret(settings.ldap_bind_password.get_secret_value()),
            )
        # Created empty: the gateway generates the token at its first start, so it
        # never enters stack state (docs/node-agent.md).
        self.agent_token_secret = secret("agent-token", inputs.agent_token_secret_name,
                                         "Bearer token of the node agents; the gateway fills it")
        self.pipeline_password_secret = secret(
            "pipeline-password", inputs.pipeline_password_secret_name,
            "Directory password of the pipeline watcher's service account")
        self.roles, self.instance_profiles = {}, {}
        for role in HOST_ROLES:
            iam_role = aws.iam.Role(
                f"{name}-{role}",
                assume_role_policy=_EC2_TRUST,
                description=f"dask-platform {role} host",
                tags=tags,
                opts=child,
            )
            aws.iam.RolePolicyAttachment(
                f"{name}-{role}-ssm-core",
                role=iam_role.name,
                opts=child,
                policy_arn=pulumi.Output.concat("arn:", context.partition, SSM_CORE_POLICY),
            )
            statements = _host_statements(context, inputs, role)
            if role == "gateway":
                statements += _gateway_statements(
                    context, inputs, self.ldap_secret.arn, self.agent_token_secret.arn)
                statements += _watcher_statements(
                    context, inputs, self.pipeline_password_secret.arn)
            else:
                statements.append(
                    {
                        "Sid": "ReadAgentToken",
                        "Effect": "Allow",
                        "Action": "secretsmanager:GetSecretValue",
                        "Resource": self.agent_token_secret.arn,
                    }
                )
            if role == "worker":
                statements += _worker_statements(context, inputs)
            aws.iam.RolePolicy(
                f"{name}-{role}-policy",
                role=iam_role.id,
                opts=child,
                policy=pulumi.Output.json_dumps({"Version": "2012-10-17", "Statement": statements}),
            )
            self.roles[role] = iam_role
            self.instance_profiles[role] = aws.iam.InstanceProfile(
                f"{name}-{role}-profile", role=iam_role.name, tags=tags, opts=child
            )
        self.register_outputs(
            {
                "ldap_secret_arn": self.ldap_secret.arn,
                "agent_token_secret_arn": self.agent_token_secret.arn,
                **{f"{role}_role_arn": r.arn for role, r in self.roles.items()},
            }
        )


def _host_statements(context: AwsContext, inputs: IdentityInputs, role: str) -> list[dict]:
    """What every host role gets; only the log group differs by role."""
    return [
        {
            "Sid": "ReadRuntimeSettings",
            "Effect": "Allow",
            "Action": "ssm:GetParameter",
            "Resource": context.arn("ssm", f"parameter{inputs.settings_parameter_name}"),
        },
        {
            "Sid": "FetchRuntimePackage",
            "Effect": "Allow",
            "Action": "s3:GetObject",
            "Resource": pulumi.Output.concat(
                inputs.artifacts_bucket_arn, "/", ARTIFACTS_PREFIX, "*"
            ),
        },
        {
            "Sid": "MountEfs",
            "Effect": "Allow",
            "Action": ["elasticfilesystem:ClientMount", "elasticfilesystem:ClientWrite"],
            "Resource": inputs.file_system_arn,
        },
        {
            "Sid": "PutPlatformMetrics",
            "Effect": "Allow",
            "Action": "cloudwatch:PutMetricData",
            "Resource": "*",
            "Condition": {"StringEquals": {"cloudwatch:namespace": inputs.metrics_namespace}},
        },
        {
            "Sid": "WriteOwnLogs",
            "Effect": "Allow",
            "Action": ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
            "Resource": context.arn("logs", f"log-group:{inputs.log_group_prefix}{role}:*"),
        },
    ]


def _worker_asg_arn(context: AwsContext, inputs: IdentityInputs) -> pulumi.Output[str]:
    return context.arn(
        "autoscaling", f"autoScalingGroup:*:autoScalingGroupName/{inputs.worker_asg_name}"
    )


def _worker_statements(context: AwsContext, inputs: IdentityInputs) -> list[dict]:
    """The worker's own launch hook. No data bucket: user code (the pipeline included)
    cannot use the instance role and gets vended data-role credentials instead."""
    return [
        {
            "Sid": "CompleteOwnLaunch",
            "Effect": "Allow",
            "Action": "autoscaling:CompleteLifecycleAction",
            "Resource": _worker_asg_arn(context, inputs),
        },
    ]


def _gateway_statements(
    context: AwsContext,
    inputs: IdentityInputs,
    ldap_secret_arn: pulumi.Output[str],
    agent_token_secret_arn: pulumi.Output[str],
) -> list[dict]:
    worker_asg_arn = _worker_asg_arn(context, inputs)
    return [
        {
            "Sid": "CreateUserHomes",
            "Effect": "Allow",
            "Action": "elasticfilesystem:ClientRootAccess",
            "Resource": inputs.file_system_arn,
        },
        {
            "Sid": "ReadLdapBindPassword",
            "Effect": "Allow",
            "Action": "secretsmanager:GetSecretValue",
            "Resource": ldap_secret_arn,
        },
        {
            "Sid": "ManageAgentToken",
            "Effect": "Allow",
            "Action": ["secretsmanager:GetSecretValue", "secretsmanager:PutSecretValue"],
            "Resource": agent_token_secret_arn,
        },
        {
            "Sid": "DiscoverNodes",
            "Effect": "Allow",
            "Resource": "*",
            "Action": [
                "autoscaling:DescribeAutoScalingGroups",
                "autoscaling:DescribeAutoScalingInstances",
                "ec2:DescribeInstances",
            ],
        },
        {
            "Sid": "ProtectBusyWorkers",
            "Effect": "Allow",
            "Action": "autoscaling:SetInstanceProtection",
            "Resource": worker_asg_arn,
        },
        {
            "Sid": "UsageReportsAndHomeArchives",
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:PutObject"],
            "Resource": [pulumi.Output.concat(inputs.bucket_arns["audit"], "/", prefix, "/*")
                         for prefix in GATEWAY_PREFIXES],
        },
        {
            "Sid": "PublishBudgetAlerts",
            "Effect": "Allow",
            "Action": "sns:Publish",
            "Resource": inputs.alert_topic_arn,
        },
    ]


def _watcher_statements(context: AwsContext, inputs: IdentityInputs,
                        password_secret_arn: pulumi.Output[str]) -> list[dict]:
    """The pipeline watcher (``dask-platform pipeline watch``): its queue's messages and
    its login; the pipeline's own bucket access is the workers' (it runs on a cluster)."""
    return [
        {
            "Sid": "ConsumeDropQueue",
            "Effect": "Allow",
            "Action": ["sqs:ReceiveMessage", "sqs:DeleteMessage",
                       "sqs:ChangeMessageVisibility"],
            "Resource": context.arn("sqs", inputs.drop_queue_name),
        },
        {
            "Sid": "ReadPipelinePassword",
            "Effect": "Allow",
            "Action": "secretsmanager:GetSecretValue",
            "Resource": password_secret_arn,
        },
    ]
