"""Where the node agents are: a static list (local mode, the scheduler host) or the
worker Auto Scaling group's InService instances (on AWS)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from daskplatform.aws import aws_client

ROLES = ("scheduler", "worker")
"""Schedulers run only on scheduler nodes, workers only on worker nodes."""


@dataclass(frozen=True)
class NodeSpec:
    """One node agent the gateway may place processes on."""

    node_id: str
    role: str
    agent_url: str

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(
                f"node {self.node_id!r}: role {self.role!r} is not one of {', '.join(ROLES)}"
            )
        if not self.agent_url.startswith(("http://", "https://")):
            raise ValueError(f"node {self.node_id!r}: agent_url {self.agent_url!r} must "
                             "start with http:// or https://")

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> NodeSpec:
        missing = [k for k in ("node_id", "role", "agent_url") if k not in raw]
        if missing:
            raise ValueError(f"node entry {raw!r} lacks {', '.join(missing)}")
        return cls(str(raw["node_id"]), str(raw["role"]), str(raw["agent_url"]))


def asg_worker_nodes(asg_name: str, agent_port: int, scheme: str = "http") -> list[NodeSpec]:
    """Worker nodes: the group's InService instances, reached on their private IPs.

    Instances still launching or terminating are left out, so nothing is placed on a
    node that is not ready or is about to go away. Blocking (boto3): call it in a thread.
    """
    groups = aws_client("autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=[asg_name])["AutoScalingGroups"]
    if not groups:
        raise LookupError(f"Auto Scaling group {asg_name!r} not found")
    ids = sorted(i["InstanceId"] for i in groups[0]["Instances"]
                 if i["LifecycleState"] == "InService")
    if not ids:
        return []
    reservations = aws_client("ec2").describe_instances(InstanceIds=ids)["Reservations"]
    return [
        NodeSpec(inst["InstanceId"], "worker", f"{scheme}://{inst['PrivateIpAddress']}:{agent_port}")
        for res in reservations for inst in res["Instances"]
        if inst.get("PrivateIpAddress")
    ]
