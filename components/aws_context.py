"""The account, region and partition the stack deploys into, looked up once.

Components build ARNs for least-privilege IAM policies from these rather than
hard-coding ``arn:aws`` (GovCloud and China use other partitions).
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws


@dataclass(frozen=True)
class AwsContext:
    account_id: pulumi.Output[str]
    region: pulumi.Output[str]
    partition: pulumi.Output[str]

    @classmethod
    def lookup(cls) -> AwsContext:
        return cls(
            account_id=aws.get_caller_identity_output().account_id,
            region=aws.get_region_output().region,
            partition=aws.get_partition_output().partition,
        )

    def arn(self, service: str, resource: str) -> pulumi.Output[str]:
        """``arn:<partition>:<service>:<region>:<account>:<resource>``."""
        return pulumi.Output.concat(
            "arn:",
            self.partition,
            ":",
            service,
            ":",
            self.region,
            ":",
            self.account_id,
            ":",
            resource,
        )
