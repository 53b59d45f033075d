"""Names the parts of a stack must agree on, fixed from the project and stack names
alone: the stack (``components/stack.py``) creates them, IAM policies and the runtime
settings name them before they exist (so no dependency cycle forms), and the rehearsal
seeds its AWS stand-in with the same ones."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from daskplatform.settings import PLATFORM_GROUPS, ROLE_TAG

WORKER_BOOT_HOOK = "dask-platform-boot"
"""The worker group's launch lifecycle hook (completed by ``host-setup``)."""


@dataclass(frozen=True)
class StackNames:
    project: str
    stack: str

    @property
    def prefix(self) -> str:
        return f"{self.project}-{self.stack}"

    @property
    def settings_parameter(self) -> str:
        return f"/{self.project}/{self.stack}/runtime-settings"

    @property
    def ldap_secret(self) -> str:
        return f"{self.project}/{self.stack}/ldap-bind-password"

    @property
    def agent_token_secret(self) -> str:
        return f"{self.project}/{self.stack}/agent-token"

    @property
    def log_group_prefix(self) -> str:
        return f"/{self.project}/{self.stack}/"

    def log_group(self, role: str) -> str:
        return f"{self.log_group_prefix}{role}"

    @property
    def metrics_namespace(self) -> str:
        return f"DaskPlatform/{self.stack}"

    @property
    def alert_topic(self) -> str:
        """The alert topic: alarms, budget alerts (the gateway publishes to it by ARN)."""
        return f"{self.prefix}-alerts"

    @property
    def drop_queue(self) -> str:
        """S3 notifications of new AppsFlyer drops (the pipeline watcher consumes it)."""
        return f"{self.prefix}-raw-drops"

    @property
    def drop_dead_letters(self) -> str:
        """Drop notifications whose runs failed ``pipeline.maxReceives`` times."""
        return f"{self.prefix}-raw-drops-dead-letters"

    @property
    def pipeline_password_secret(self) -> str:
        """The pipeline service account's directory password (filled out of band)."""
        return f"{self.project}/{self.stack}/pipeline-password"

    @property
    def worker_asg(self) -> str:
        return f"{self.prefix}-workers"

    def data_role(self, group: str) -> str:
        """The IAM role whose credentials ``group``'s members get (at most 64 characters:
        the project and stack names leave room for the longest group)."""
        return f"{self.prefix}-data-{group.replace('_', '-')}"

    def data_roles(self) -> dict[str, str]:
        """Each platform group's data role, and the pipeline service account's."""
        return {key: self.data_role(key) for key in (*PLATFORM_GROUPS, "pipeline")}

    def runtime_names(self) -> dict[str, str | dict[str, str]]:
        """The RuntimeSettings fields only the stack knows (``PlatformSettings.runtime``)."""
        return {"stack_name": self.stack, "worker_asg_name": self.worker_asg,
                "worker_boot_hook": WORKER_BOOT_HOOK,
                "agent_token_secret_id": self.agent_token_secret,
                "metrics_namespace": self.metrics_namespace,
                "data_roles": self.data_roles()}


def host_tags(tags: Mapping[str, str], role: str) -> dict[str, str]:
    """An instance's tags: the common ones, its name and its role (the gateway finds the
    scheduler host by its stack and role tags)."""
    return {**tags, "Name": f"{tags.get('project')}-{tags.get('stack')}-{role}", ROLE_TAG: role}
