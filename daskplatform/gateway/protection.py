"""Scale-in safety: a worker node holding any Dask process is protected from scale-in
(Auto Scaling instance protection) and released when it empties, so the autoscaler only
ever removes empty nodes."""

from __future__ import annotations

import asyncio
import logging

from daskplatform.aws import aws_client

log = logging.getLogger(__name__)


class ScaleInProtection:
    """Keeps each member instance's protection flag equal to "has processes"."""

    def __init__(self, asg_name: str) -> None:
        self.asg_name = asg_name
        self._client = aws_client("autoscaling")
        self._protected: set[str] = set()
        self._members: set[str] = set()
        self._lock = asyncio.Lock()

    async def refresh(self) -> None:
        """Learn the group's members and their current flags (also after a gateway restart)."""
        groups = (await asyncio.to_thread(
            self._client.describe_auto_scaling_groups, AutoScalingGroupNames=[self.asg_name]
        ))["AutoScalingGroups"]
        instances = groups[0]["Instances"] if groups else []
        self._members = {i["InstanceId"] for i in instances}
        self._protected = {i["InstanceId"] for i in instances if i.get("ProtectedFromScaleIn")}

    def is_member(self, node_id: str) -> bool:
        return node_id in self._members

    async def set_busy(self, node_id: str, busy: bool) -> None:
        """Protect a member node that holds processes; release one that is empty."""
        if node_id not in self._members:
            return
        async with self._lock:
            if busy == (node_id in self._protected):
                return
            await asyncio.to_thread(
                self._client.set_instance_protection, InstanceIds=[node_id],
                AutoScalingGroupName=self.asg_name, ProtectedFromScaleIn=busy,
            )
            if busy:
                self._protected.add(node_id)
            else:
                self._protected.discard(node_id)
            log.info("Scale-in protection %s for %s in %s", "set" if busy else "cleared",
                     node_id, self.asg_name)
