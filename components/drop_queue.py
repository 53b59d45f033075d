"""DropQueue: S3 notifications of new AppsFlyer drops, queued for the pipeline watcher.

The raw bucket notifies ``s3:ObjectCreated:*`` below ``pipeline.rawPrefix`` into an
encrypted SQS queue that only that bucket (in this account) may send to. The watcher on
the gateway host (``dask-platform pipeline watch``) deletes a message once its drop is
processed; a failed run leaves it, so it comes back after ``pipeline.retrySeconds`` (the
visibility timeout), and after ``pipeline.maxReceives`` receives it moves to the
dead-letter queue, kept 14 days for a person to look at.
"""

from __future__ import annotations

from collections.abc import Mapping

import pulumi
import pulumi_aws as aws

from components.aws_context import AwsContext
from daskplatform.settings import PipelineSettings

NOTIFIED_EVENTS = ["s3:ObjectCreated:*"]
MAX_RETENTION_SECONDS = 14 * 24 * 3600
"""SQS's longest: a drop nobody processed stays visible for two weeks."""
LONG_POLL_SECONDS = 20
"""Receives wait this long for a message (long polling: fewer empty receives)."""


class DropQueue(pulumi.ComponentResource):
    queue: aws.sqs.Queue
    dead_letters: aws.sqs.Queue
    notification: aws.s3.BucketNotification

    def __init__(
        self,
        name: str,
        *,
        queue_name: str,
        dead_letter_name: str,
        bucket_id: pulumi.Input[str],
        bucket_arn: pulumi.Input[str],
        pipeline: PipelineSettings,
        context: AwsContext,
        tags: Mapping[str, str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("daskplatform:aws:DropQueue", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        tags = dict(tags)
        # Named up front: the gateway's policy names the queue before it exists, and the
        # dead-letter queue accepts redrives from this queue only.
        queue_arn = context.arn("sqs", queue_name)
        self.dead_letters = aws.sqs.Queue(
            f"{name}-dead-letters",
            name=dead_letter_name,
            sqs_managed_sse_enabled=True,
            message_retention_seconds=MAX_RETENTION_SECONDS,
            redrive_allow_policy=pulumi.Output.json_dumps(
                {"redrivePermission": "byQueue", "sourceQueueArns": [queue_arn]}),
            tags=tags,
            opts=child,
        )
        self.queue = aws.sqs.Queue(
            f"{name}-queue",
            name=queue_name,
            sqs_managed_sse_enabled=True,
            visibility_timeout_seconds=pipeline.retry_seconds,
            message_retention_seconds=MAX_RETENTION_SECONDS,
            receive_wait_time_seconds=LONG_POLL_SECONDS,
            redrive_policy=pulumi.Output.json_dumps(
                {"deadLetterTargetArn": self.dead_letters.arn,
                 "maxReceiveCount": pipeline.max_receives}),
            tags=tags,
            opts=child,
        )
        policy = aws.sqs.QueuePolicy(
            f"{name}-policy",
            queue_url=self.queue.url,
            opts=child,
            policy=pulumi.Output.json_dumps({
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "RawBucketNotifications",
                        "Effect": "Allow",
                        "Principal": {"Service": "s3.amazonaws.com"},
                        "Action": "sqs:SendMessage",
                        "Resource": self.queue.arn,
                        "Condition": {
                            "ArnEquals": {"aws:SourceArn": bucket_arn},
                            "StringEquals": {"aws:SourceAccount": context.account_id},
                        },
                    },
                    {
                        "Sid": "DenyInsecureTransport",
                        "Effect": "Deny",
                        "Principal": "*",
                        "Action": "sqs:*",
                        "Resource": self.queue.arn,
                        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                    },
                ],
            }),
        )
        # S3 tests that it may send when the notification is created: after the policy.
        self.notification = aws.s3.BucketNotification(
            f"{name}-notification",
            bucket=bucket_id,
            queues=[{"queue_arn": self.queue.arn, "events": NOTIFIED_EVENTS,
                     "filter_prefix": pipeline.raw_prefix}],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[policy]),
        )
        self.register_outputs({"queue_url": self.queue.url,
                               "dead_letter_queue_url": self.dead_letters.url})
