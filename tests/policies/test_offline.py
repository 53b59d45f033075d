"""The offline evaluator: same rules, same config shape, without the engine."""

from __future__ import annotations

import json

import pytest

from daskplatform.settings import RuntimeSettings
from policies.model import Violation
from policies.offline import evaluate, format_violations

TAGS = {"project": "dask-platform", "stack": "dev", "team": "data-platform",
        "cost-center": "analytics"}
OPEN_SSH = {"type": "aws:ec2/securityGroup:SecurityGroup", "name": "platform-worker",
            "props": {"description": "workers", "tags": TAGS, "ingress": [
                {"protocol": "tcp", "fromPort": 22.0, "toPort": 22.0,
                 "securityGroups": ["sg-1"]}]}}


def test_violation_carries_policy_level_resource_and_message() -> None:
    assert evaluate([OPEN_SSH]) == [
        Violation("security-group-ingress-ports", "mandatory", "platform-worker",
                  "ingress[0] opens port 22 from a security group, which is not a platform "
                  "port; allowed: 80, 389, 443, 636, 2049, 8000, 8081, 8786, 8790, "
                  "8800-8899, 9000-9199, 9200-9999 (DESIGN.md, Ports)"),
        Violation("no-admin-ports", "mandatory", "platform-worker",
                  "ingress[0] opens port 22 (SSH) from a security group; remove it and use SSM "
                  "Session Manager for shells"),
    ]


def test_enforcement_level_can_be_lowered_or_disabled() -> None:
    config = {"no-admin-ports": "advisory",
              "security-group-ingress-ports": {"enforcementLevel": "disabled"}}
    assert [(v.policy, v.enforcement) for v in evaluate([OPEN_SSH], config)] == [
        ("no-admin-ports", "advisory")]


def test_rule_options_come_from_config() -> None:
    config = {"security-group-ingress-ports": {"allowedPorts": [22]},
              "no-admin-ports": "disabled"}
    assert evaluate([OPEN_SSH], config) == []


def test_bad_config_is_refused_with_the_allowed_values() -> None:
    with pytest.raises(ValueError, match=r"unknown policy name\(s\) in config: no-such-rule; "
                                         r"allowed: security-group-ingress-ports, "):
        evaluate([], {"no-such-rule": "advisory"})
    with pytest.raises(ValueError, match="policy config no-admin-ports.enforcementLevel is "
                                         "'blocking'; allowed: mandatory, advisory, disabled"):
        evaluate([], {"no-admin-ports": "blocking"})


def test_secret_wrapped_values_are_unwrapped_like_the_engine_does() -> None:
    """SSM parameter values are secret outputs; mocks capture them in the wire envelope."""
    document = json.loads(RuntimeSettings().to_json())
    document["quotas"]["idleTimeoutMinutes"] = 600
    envelope = {"4dabf18193072939515e22adb298388d": "1b47061264138c4ac30d75fd1eb44270",
                "value": json.dumps(document)}
    parameter = {"type": "aws:ssm/parameter:Parameter", "name": "settings",
                 "inputs": {"type": "String", "value": envelope, "tags": TAGS}}
    assert [(v.policy, v.resource) for v in evaluate([parameter])] == [
        ("quota-idle-timeout", "settings")]


def test_linking_uses_captured_ids_and_outputs() -> None:
    bucket = {"type": "aws:s3/bucket:Bucket", "name": "platform-audit", "id": "platform-audit-1",
              "outputs": {"bucket": "platform-audit-1"}, "props": {"tags": TAGS}}
    versioning = {"type": "aws:s3/bucketVersioning:BucketVersioning", "name": "v",
                  "props": {"bucket": "platform-audit-1",
                            "versioningConfiguration": {"status": "Enabled"}}}
    policies = {v.policy for v in evaluate([bucket, versioning])}
    assert "s3-versioning" not in policies
    assert {"s3-bucket-encryption", "s3-public-access-blocked"} <= policies


def test_format_lists_mandatory_first() -> None:
    lines = format_violations([
        Violation("required-tags", "advisory", "a", "missing tag(s) team"),
        Violation("no-admin-ports", "mandatory", "", "port 22"),
    ]).splitlines()
    assert lines == ["[mandatory] no-admin-ports: (stack): port 22",
                     "[advisory] required-tags: a: missing tag(s) team"]
