"""The pool's scale-out signal: waiting worker requests, published to CloudWatch beside
CPU so the worker Auto Scaling group can add a node before anyone waits long."""

from __future__ import annotations

import asyncio

from daskplatform.aws import aws_client

PENDING_WORKERS = "PendingWorkers"
"""Metric name the worker group's scale-out alarm watches."""


class CloudWatchPublisher:
    """Puts the pending count, dimensioned by the Auto Scaling group when there is one."""

    def __init__(self, namespace: str, asg_name: str = "") -> None:
        self.namespace = namespace
        self.dimensions = ([{"Name": "AutoScalingGroupName", "Value": asg_name}]
                           if asg_name else [])
        self._client = aws_client("cloudwatch")

    async def publish(self, *, pending_workers: int) -> None:
        await asyncio.to_thread(
            self._client.put_metric_data, Namespace=self.namespace,
            MetricData=[{"MetricName": PENDING_WORKERS, "Dimensions": self.dimensions,
                         "Value": float(pending_workers), "Unit": "Count"}],
        )
