"""What moto needs, beyond its defaults, to stand in for AWS's data access (local mode
and the rehearsal's ``dp-aws``): the per-group data roles, with the documents the stack
gives them, and IAM enforcement for the credentials those roles vend.

moto checks no policy unless told to, and told to, it checks every request, the
platform's own too; those carry stand-in keys (``local``, the rehearsal's instance-role
credentials) that no IAM user in moto owns, so they would all be refused. Enforcement is
therefore narrowed to what this is for: a request signed with credentials moto's STS
issued (an assumed role's) is authenticated and authorised against its role's policies,
as AWS would; every other request is served as before. On AWS the instance roles are
checked too (their policies are proven under Pulumi mocks, ``tests/cloud``), and user
code cannot reach them (IMDS is fenced off for user uids).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlparse

from moto.core.authorization import ActionAuthenticatorMixin
from moto.sts.models import sts_backends

from daskplatform.data_access import policy_for, trust_policy
from daskplatform.settings import MAX_DATA_SESSION_MINUTES, RuntimeSettings

_CREDENTIAL = re.compile(r"Credential=([A-Z0-9]+)/")


def _vended(request: Any) -> bool:
    """Whether the request is signed with an assumed role's access key."""
    found = _CREDENTIAL.search(request.headers.get("Authorization") or "")
    if not found:
        return False
    backend = sts_backends[request.current_account]["aws"]
    return backend.get_assumed_role_from_access_key(found.group(1)) is not None


def _authenticate_and_authorize_vended(self: Any, iam_request_cls: type,
                                       resource: str = "*") -> None:
    """moto's own check (``ActionAuthenticatorMixin``), for vended credentials only."""
    if not _vended(self):
        return
    parsed = urlparse(self.uri)
    path = self.raw_path + (f"?{parsed.query}" if parsed.query else "")
    request = iam_request_cls(account_id=self.current_account, method=self.method, path=path,
                              data=self.data, body=self.raw_body, headers=self.headers,
                              action=self._get_action())
    request.check_signature()
    request.check_action_permitted(resource)


def enforce_vended_credentials() -> None:
    """From now on, in this process's moto (server mode runs in-process)."""
    ActionAuthenticatorMixin._authenticate_and_authorize_action = (  # type: ignore[method-assign]
        _authenticate_and_authorize_vended)


def create_data_roles(iam: Any, settings: RuntimeSettings, bucket_names: Mapping[str, str],
                      trusted_arn: str) -> dict[str, str]:
    """The data roles the settings name, with the stack's documents; group -> role ARN.
    ``trusted_arn`` stands for the gateway host's role."""
    arns = {kind: f"arn:aws:s3:::{name}" for kind, name in bucket_names.items()}
    created = {}
    for key, role_name in settings.data_roles.items():
        role = iam.create_role(RoleName=role_name,
                               AssumeRolePolicyDocument=json.dumps(trust_policy(trusted_arn)),
                               MaxSessionDuration=MAX_DATA_SESSION_MINUTES * 60)
        iam.put_role_policy(RoleName=role_name, PolicyName="data-access",
                            PolicyDocument=json.dumps(
                                policy_for(key, settings.data_access, arns)))
        created[key] = role["Role"]["Arn"]
    return created
