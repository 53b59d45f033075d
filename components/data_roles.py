"""DataRoles: one IAM role per platform group, whose short-lived credentials the gateway
vends to that group's members (``GET /api/v1/credentials``), one for the pipeline's
service account, and the gateway role's right to assume exactly these roles.

Each role trusts only the gateway host's role; its permissions follow the group's
``dataAccess`` levels, bucket by bucket (``daskplatform/data_access.py``, the same
documents local mode and the rehearsal enforce in moto). Sessions last at most an hour:
the gateway assumes them with its instance role's session, and AWS caps chained
sessions at one hour. Role names are fixed from the stack's names
(``StackNames.data_role``), so the runtime settings name them before they exist.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import pulumi
import pulumi_aws as aws

from daskplatform.data_access import gateway_policy, policy_for, trust_policy
from daskplatform.settings import MAX_DATA_SESSION_MINUTES, DataAccessSettings, SettingsError

MAX_ROLE_NAME = 64
"""IAM's limit on a role name."""


class DataRoles(pulumi.ComponentResource):
    roles: dict[str, aws.iam.Role]

    def __init__(
        self,
        name: str,
        access: DataAccessSettings,
        *,
        role_names: Mapping[str, str],
        bucket_arns: Mapping[str, pulumi.Input[str]],
        gateway_role: aws.iam.Role,
        tags: Mapping[str, str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("daskplatform:aws:DataRoles", name, None, opts)
        long = [n for n in role_names.values() if len(n) > MAX_ROLE_NAME]
        if long:
            raise SettingsError(
                f"data role name(s) {', '.join(long)} exceed IAM's {MAX_ROLE_NAME} characters; "
                "use a shorter project or stack name")
        child = pulumi.ResourceOptions(parent=self)
        arns = pulumi.Output.all(**bucket_arns)
        self.roles = {}
        for key, role_name in role_names.items():
            role = aws.iam.Role(
                f"{name}-{key}",
                name=role_name,
                assume_role_policy=gateway_role.arn.apply(
                    lambda arn: json.dumps(trust_policy(arn))),
                max_session_duration=MAX_DATA_SESSION_MINUTES * 60,
                description=f"dask-platform data access of {key} (vended by the gateway)",
                tags={**tags, "data-role": key},
                opts=child,
            )
            aws.iam.RolePolicy(
                f"{name}-{key}-policy",
                role=role.id,
                policy=arns.apply(lambda known, k=key: json.dumps(
                    policy_for(k, access, known))),
                opts=child,
            )
            self.roles[key] = role
        aws.iam.RolePolicy(
            f"{name}-gateway-assume",
            role=gateway_role.id,
            policy=pulumi.Output.all(*(r.arn for r in self.roles.values())).apply(
                lambda known: json.dumps(gateway_policy(list(known)))),
            opts=child,
        )
        self.register_outputs({f"{key}_role_arn": r.arn for key, r in self.roles.items()})
