"""Where the node agents are: a static list (local mode), or on AWS the worker Auto
Scaling group's InService instances and the running instances tagged as this stack's
scheduler host."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from daskplatform.aws import aws_client
from daskplatform.settings import ROLE_TAG, STACK_TAG

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
    return _instance_nodes("worker", agent_port, scheme, InstanceIds=ids)


def tagged_scheduler_nodes(stack_name: str, agent_port: int,
                           scheme: str = "http") -> list[NodeSpec]:
    """Scheduler nodes: this stack's running instances tagged with the scheduler role.

    The scheduler host is a single instance outside any group, so its tags are how the
    gateway finds it, also after it is replaced. Blocking (boto3): call it in a thread.
    """
    return _instance_nodes("scheduler", agent_port, scheme, Filters=[
        {"Name": f"tag:{ROLE_TAG}", "Values": ["scheduler"]},
        {"Name": f"tag:{STACK_TAG}", "Values": [stack_name]},
        {"Name": "instance-state-name", "Values": ["running"]},
    ])


def _instance_nodes(role: str, agent_port: int, scheme: str,
                    **query: Any) -> list[NodeSpec]:
    """The instances ``DescribeInstances(**query)`` lists, as ``role`` nodes on their
    private IPs (every page)."""
    pages = aws_client("ec2").get_paginator("describe_instances").paginate(**query)
    return [
        NodeSpec(inst["InstanceId"], role, f"{scheme}://{inst['PrivateIpAddress']}:{agent_port}")
        for page in pages for res in page["Reservations"] for inst in res["Instances"]
        if inst.get("PrivateIpAddress")
    ]
