"""Required tags, on the types pulumi-aws says accept tags."""

from __future__ import annotations

from policies.tagging import is_taggable
from tests.policies.support import RULE, run


def test_taggable_types_come_from_the_sdk() -> None:
    assert is_taggable("aws:ec2/securityGroup:SecurityGroup")
    assert is_taggable("aws:autoscaling/group:Group")
    assert not is_taggable("aws:ec2/securityGroupRule:SecurityGroupRule")
    assert not is_taggable("daskplatform:aws:Storage")
    assert not is_taggable("aws:nosuch/thing:Thing")


def test_missing_tags_are_advisory_and_named() -> None:
    assert RULE["required-tags"].enforcement == "advisory"
    tags = {"project": "dask-platform", "stack": "dev", "team": "x"}
    assert run("required-tags", "aws:s3/bucket:Bucket", {"tags": tags}) == [
        "missing tag(s) cost-center; add them to dask-platform:tags or the resource's tags"]


def test_tags_present_pass_map_and_asg_list() -> None:
    tags = {"project": "dask-platform", "stack": "dev", "team": "data-platform",
            "cost-center": "analytics"}
    assert run("required-tags", "aws:s3/bucket:Bucket", {"tags": tags}) == []
    asg_tags = [{"key": k, "value": v, "propagateAtLaunch": True} for k, v in tags.items()]
    assert run("required-tags", "aws:autoscaling/group:Group", {"tags": asg_tags}) == []


def test_untaggable_resource_is_not_checked() -> None:
    assert run("required-tags", "aws:ec2/securityGroupRule:SecurityGroupRule", {}) == []


def test_required_list_is_configurable() -> None:
    assert run("required-tags", "aws:s3/bucket:Bucket", {"tags": {}},
               config={"requiredTags": ["owner"]}) == [
        "missing tag(s) owner; add them to dask-platform:tags or the resource's tags"]
