"""The AWS side, through moto's server: node discovery (the worker group, the scheduler
host by its tags), scale-in protection of nodes holding processes, and the platform
metrics the stack's alarms watch."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest

from daskplatform.aws import aws_client
from daskplatform.gateway.directory import asg_worker_nodes, tagged_scheduler_nodes
from daskplatform.settings import (
    ACTIVE_CLUSTERS_METRIC,
    ACTIVE_WORKERS_METRIC,
    BACKLOG_NODES_METRIC,
    CLUSTER_START_METRIC,
    IDLE_NODES_METRIC,
    PENDING_WORKERS_METRIC,
    POOL_MEMORY_RESERVED_METRIC,
    QUEUED_TASKS_METRIC,
    ROLE_TAG,
    STACK_TAG,
    WORKER_MANAGED_METRIC,
    WORKER_MEMORY_PERCENT_METRIC,
    WORKER_SPILLED_METRIC,
    WORKER_UNMANAGED_METRIC,
)
from tests.gateway.conftest import Pool, wait_for

AWS_KEYS = ("DASK_PLATFORM_AWS_ENDPOINT", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
"""What the gateway's child process needs to reach moto's server."""


def _make_group(size: int) -> tuple[str, list[str]]:
    """A worker group in moto with ``size`` InService instances."""
    name = f"workers-{uuid.uuid4().hex[:8]}"
    autoscaling = aws_client("autoscaling")
    autoscaling.create_launch_configuration(LaunchConfigurationName=name,
                                            ImageId="ami-12c6146b", InstanceType="c5.large")
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName=name, LaunchConfigurationName=name, MinSize=size,
        MaxSize=size, DesiredCapacity=size, AvailabilityZones=["eu-west-1a"])
    group = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[name])
    return name, sorted(i["InstanceId"] for i in group["AutoScalingGroups"][0]["Instances"])


def _protected(name: str) -> dict[str, bool]:
    group = aws_client("autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=[name])["AutoScalingGroups"][0]
    return {i["InstanceId"]: i["ProtectedFromScaleIn"] for i in group["Instances"]}


def test_directory_lists_in_service_instances_by_private_ip(aws_env: str) -> None:
    name, ids = _make_group(2)
    aws_client("autoscaling").enter_standby(
        AutoScalingGroupName=name, InstanceIds=[ids[0]], ShouldDecrementDesiredCapacity=True)
    nodes = asg_worker_nodes(name, agent_port=8790)
    ip = aws_client("ec2").describe_instances(InstanceIds=[ids[1]])[
        "Reservations"][0]["Instances"][0]["PrivateIpAddress"]
    assert [(n.node_id, n.role, n.agent_url) for n in nodes] == [
        (ids[1], "worker", f"http://{ip}:8790")]
    with pytest.raises(LookupError, match="no-such-group"):
        asg_worker_nodes("no-such-group", agent_port=8790)


def _run_host(stack: str, role: str, **options: str) -> tuple[str, str]:
    """(instance id, private IP) of a new instance tagged like the stack's hosts."""
    tags = [{"Key": STACK_TAG, "Value": stack}, {"Key": ROLE_TAG, "Value": role},
            {"Key": "project", "Value": "dask-platform"}]
    (instance,) = aws_client("ec2").run_instances(
        ImageId="ami-12c6146b", InstanceType="c5.xlarge", MinCount=1, MaxCount=1,
        TagSpecifications=[{"ResourceType": "instance", "Tags": tags}], **options)["Instances"]
    return instance["InstanceId"], instance["PrivateIpAddress"]


def test_scheduler_hosts_are_this_stacks_running_instances_tagged_scheduler(
        aws_env: str) -> None:
    stack = f"stack-{uuid.uuid4().hex[:8]}"
    scheduler, ip = _run_host(stack, "scheduler")
    _run_host(stack, "worker")
    _run_host(stack, "gateway")
    _run_host(f"other-{stack}", "scheduler")
    stopped, _ = _run_host(stack, "scheduler")
    terminated, _ = _run_host(stack, "scheduler")
    ec2 = aws_client("ec2")
    ec2.stop_instances(InstanceIds=[stopped])
    ec2.terminate_instances(InstanceIds=[terminated])
    nodes = tagged_scheduler_nodes(stack, agent_port=8790, scheme="https")
    assert [(n.node_id, n.role, n.agent_url) for n in nodes] == [
        (scheduler, "scheduler", f"https://{ip}:8790")]
    assert tagged_scheduler_nodes(f"none-{stack}", agent_port=8790) == []


def test_the_gateway_finds_the_scheduler_host_by_its_tags_and_runs_schedulers_there(
        aws_env: str, make_pool) -> None:
    stack = f"stack-{uuid.uuid4().hex[:8]}"
    # The instance's private IP is 127.0.0.1, where its agent (not a --node) listens.
    instance_id, _ = _run_host(stack, "scheduler", PrivateIpAddress="127.0.0.1")
    pool: Pool = make_pool(env={k: os.environ[k] for k in AWS_KEYS})
    agent = pool.add_agent(instance_id, "scheduler", cores=1, memory_gb=1, static=False)
    pool.add_agent("w-1", "worker", cores=1, memory_gb=1)
    pool.start_gateway(extra_config=f"c.PoolBackend.agent_port = {urlsplit(agent.url).port}\n",
                       extra_args=["--stack-name", stack])
    assert {(n["node_id"], n["role"]) for n in pool.metrics()["nodes"]} == {
        (instance_id, "scheduler"), ("w-1", "worker")}
    with pool.client("ann") as gateway, gateway.new_cluster():
        (scheduler,) = pool.processes(instance_id)
        assert scheduler["kind"] == "scheduler"


def test_nodes_holding_processes_are_protected_until_they_empty(aws_env: str,
                                                                make_pool) -> None:
    name, ids = _make_group(2)
    pool: Pool = make_pool(env={k: os.environ[k] for k in AWS_KEYS})
    pool.add_agent("sched-1", "scheduler", cores=1, memory_gb=1)
    for instance_id in ids:  # agents on 127.0.0.1 stand in for the two instances
        pool.add_agent(instance_id, "worker", cores=1, memory_gb=1)
    pool.start_gateway(
        extra_config="c.PoolBackend.metrics_period = 0.5\n",
        extra_args=["--asg-name", name, "--metrics-namespace", f"test-{name}"])
    assert _protected(name) == {i: False for i in ids}
    with pool.client("ann") as gateway, gateway.new_cluster() as cluster, \
            cluster.get_client() as client:
        cluster.scale(1)
        client.wait_for_workers(1, timeout=60)
        busy = next(i for i in ids if pool.processes(i))
        assert _protected(name) == {i: i == busy for i in ids}
        cluster.scale(0)
        wait_for(lambda: not pool.processes(busy), 30, "worker did not stop")
        wait_for(lambda: _protected(name) == {i: False for i in ids}, 20,
                 "protection not cleared on the emptied node")
    metrics = aws_client("cloudwatch").list_metrics(Namespace=f"test-{name}")["Metrics"]
    latency = sorted(str(m["Dimensions"]) for m in metrics
                     if m["MetricName"] == CLUSTER_START_METRIC)
    # The cluster's start latency: the alarm's series and its group's.
    assert latency == sorted(["[]", str([{"Name": "Group", "Value": "data_analysts"}])])
    published = {m["MetricName"]: m["Dimensions"] for m in metrics
                 if m["MetricName"] != CLUSTER_START_METRIC}
    # The dimensions the stack's alarms name: the pool's metric per worker group.
    pool_dimension = [{"Name": "AutoScalingGroupName", "Value": name}]
    assert {m: published.pop(m) for m in (PENDING_WORKERS_METRIC, ACTIVE_CLUSTERS_METRIC,
                                          ACTIVE_WORKERS_METRIC, QUEUED_TASKS_METRIC,
                                          BACKLOG_NODES_METRIC, IDLE_NODES_METRIC)} == {
        PENDING_WORKERS_METRIC: pool_dimension, BACKLOG_NODES_METRIC: pool_dimension,
        IDLE_NODES_METRIC: pool_dimension,
        ACTIVE_CLUSTERS_METRIC: [], ACTIVE_WORKERS_METRIC: [], QUEUED_TASKS_METRIC: []}
    # Worker memory, once a round saw the worker, has no dimension (no metric per worker).
    assert set(published) <= {WORKER_MANAGED_METRIC, WORKER_UNMANAGED_METRIC,
                              WORKER_SPILLED_METRIC, WORKER_MEMORY_PERCENT_METRIC,
                              POOL_MEMORY_RESERVED_METRIC}
    assert all(dimensions == [] for dimensions in published.values())


def _maximum(namespace: str, metric: str) -> float | None:
    """Highest value published so far to a metric without dimensions."""
    now = datetime.now(UTC)
    points = aws_client("cloudwatch").get_metric_statistics(
        Namespace=namespace, MetricName=metric, Dimensions=[], Statistics=["Maximum"],
        StartTime=now - timedelta(hours=1), EndTime=now + timedelta(minutes=1),
        Period=3600)["Datapoints"]
    return max((p["Maximum"] for p in points), default=None)


def test_the_gateway_publishes_the_clusters_workers_and_tasks_the_alarms_watch(
        aws_env: str, make_pool) -> None:
    namespace = f"test-{uuid.uuid4().hex[:8]}"
    pool: Pool = make_pool(env={k: os.environ[k] for k in AWS_KEYS})
    pool.add_agent("sched-1", "scheduler", cores=1, memory_gb=1)
    pool.add_agent("w-1", "worker", cores=1, memory_gb=1)  # room for two test workers
    pool.start_gateway(extra_config="c.PoolBackend.metrics_period = 0.5\n",
                       extra_args=["--metrics-namespace", namespace])
    with pool.client("ann") as gateway, gateway.new_cluster() as cluster, \
            cluster.get_client() as client:
        wait_for(lambda: _maximum(namespace, ACTIVE_CLUSTERS_METRIC) == 1, 20,
                 "ActiveClusters never reached 1")
        assert _maximum(namespace, ACTIVE_WORKERS_METRIC) == 0
        cluster.scale(2)
        client.wait_for_workers(2, timeout=60)
        # Tasks no worker can run (a resource nobody has) wait in the scheduler.
        futures = client.map(abs, range(9), pure=False, resources={"GPU": 1})
        wait_for(lambda: _maximum(namespace, QUEUED_TASKS_METRIC) == len(futures), 20,
                 "QueuedTasks never showed the waiting tasks")
        wait_for(lambda: _maximum(namespace, ACTIVE_WORKERS_METRIC) == 2, 20,
                 "ActiveWorkers never showed the two running workers")
        # Each worker's memory: at least its interpreter is unmanaged.
        wait_for(lambda: (_maximum(namespace, WORKER_UNMANAGED_METRIC) or 0) > 0, 20,
                 "WorkerUnmanagedBytes never published")
        # ... against its limit, and the pool's placed memory against what it offers.
        wait_for(lambda: 0 < (_maximum(namespace, WORKER_MEMORY_PERCENT_METRIC) or 0) < 100,
                 20, "WorkerMemoryUsedPercent never published")
        assert 0 < (_maximum(namespace, POOL_MEMORY_RESERVED_METRIC) or 0) <= 100
        client.cancel(futures)
    # Never more than what ran: one cluster, two workers.
    assert _maximum(namespace, ACTIVE_CLUSTERS_METRIC) == 1
    assert _maximum(namespace, ACTIVE_WORKERS_METRIC) == 2
