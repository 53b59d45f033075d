"""The pack as the Pulumi engine runs it: ``policies/__main__.py`` started from its own
directory and spoken to over the analyzer gRPC protocol. Proves the wrapping of each
kind of rule (resource, stack, config, unknown values in preview), not just the cores."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import empty_pb2, struct_pb2
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc
from pulumi_policy.proxy import UNKNOWN_NUMBER_VALUE, UNKNOWN_OBJECT_VALUE, UNKNOWN_STRING_VALUE

from policies.rules import RULES

PACK_DIR = Path(__file__).resolve().parents[2] / "policies"
TAGS = {"project": "dask-platform", "stack": "dev", "team": "t", "cost-center": "c"}
MANDATORY = analyzer_pb2.MANDATORY
ADVISORY = analyzer_pb2.ADVISORY


@pytest.fixture(scope="module")
def analyzer() -> Iterator[analyzer_pb2_grpc.AnalyzerStub]:
    process = subprocess.Popen([sys.executable, "-u", str(PACK_DIR / "__main__.py")],
                               cwd=PACK_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline().strip() or 0)
        assert port, process.stderr.read().decode() if process.stderr else "no port printed"
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
            yield analyzer_pb2_grpc.AnalyzerStub(channel)
    finally:
        process.kill()
        process.wait(timeout=10)


def _struct(value: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(value)
    return struct


def analyze(stub: analyzer_pb2_grpc.AnalyzerStub, resource_type: str, name: str,
            props: dict[str, Any]) -> list[tuple[str, str, int]]:
    response = stub.Analyze(analyzer_pb2.AnalyzeRequest(
        type=resource_type, name=name, urn=f"urn:pulumi:dev::dask-platform::{resource_type}::{name}",
        properties=_struct(props)))
    return [(d.policyName, d.message, d.enforcementLevel) for d in response.diagnostics]


def test_pack_lists_every_rule_with_its_schema(analyzer: analyzer_pb2_grpc.AnalyzerStub) -> None:
    info = analyzer.GetAnalyzerInfo(empty_pb2.Empty())
    assert info.name == "dask-platform"
    assert [p.name for p in info.policies] == [r.name for r in RULES]
    by_name = {p.name: p for p in info.policies}
    ceiling = by_name["asg-size-bounds"].configSchema.properties["maxSizeCeiling"]
    assert ceiling["default"] == 20
    assert by_name["required-tags"].enforcementLevel == ADVISORY
    assert by_name["no-admin-ports"].enforcementLevel == MANDATORY


def test_resource_rule_reports_through_the_engine_protocol(
        analyzer: analyzer_pb2_grpc.AnalyzerStub) -> None:
    props = {"description": "gateway", "tags": TAGS, "ingress": [
        {"protocol": "tcp", "fromPort": 22, "toPort": 22, "cidrBlocks": ["0.0.0.0/0"]}]}
    diagnostics = analyze(analyzer, "aws:ec2/securityGroup:SecurityGroup", "platform-gateway",
                          props)
    assert sorted(name for name, _, _ in diagnostics) == [
        "no-admin-ports", "public-ingress-only-alb", "security-group-ingress-ports"]
    admin = next(d for d in diagnostics if d[0] == "no-admin-ports")
    assert admin[1] == ("Ingress never opens SSH (22) or RDP (3389).\ningress[0] opens port 22 "
                        "(SSH) from 0.0.0.0/0; remove it and use SSM Session Manager for shells")
    assert admin[2] == MANDATORY


def test_clean_resource_has_no_diagnostics(analyzer: analyzer_pb2_grpc.AnalyzerStub) -> None:
    props = {"encrypted": True, "tags": TAGS}
    assert analyze(analyzer, "aws:efs/fileSystem:FileSystem", "fs", props) == []


def test_unknown_value_in_preview_is_reported_not_passed(
        analyzer: analyzer_pb2_grpc.AnalyzerStub) -> None:
    props = {"ingress": [{"protocol": "tcp", "fromPort": UNKNOWN_NUMBER_VALUE,
                          "toPort": 22, "cidrBlocks": ["10.0.0.0/8"]}]}
    diagnostics = analyze(analyzer, "aws:ec2/securityGroup:SecurityGroup", "sg", props)
    admin = [d for d in diagnostics if d[0] == "no-admin-ports"]
    assert len(admin) == 1 and "can't be known during preview" in admin[0][1]
    assert admin[0][2] == ADVISORY


def test_stack_rule_names_the_offending_resource(
        analyzer: analyzer_pb2_grpc.AnalyzerStub) -> None:
    bucket_urn = "urn:pulumi:dev::dask-platform::aws:s3/bucket:Bucket::platform-raw"
    sse_urn = "urn:pulumi:dev::dask-platform::aws:s3/bucketServerSideEncryptionConfiguration::x"
    audit_urn = "urn:pulumi:dev::dask-platform::aws:s3/bucket:Bucket::platform-audit"
    response = analyzer.AnalyzeStack(analyzer_pb2.AnalyzeStackRequest(resources=[
        analyzer_pb2.AnalyzerResource(type="aws:s3/bucket:Bucket", name="platform-raw",
                                      urn=bucket_urn, properties=_struct({})),
        analyzer_pb2.AnalyzerResource(type="aws:s3/bucket:Bucket", name="platform-audit",
                                      urn=audit_urn, properties=_struct({})),
        analyzer_pb2.AnalyzerResource(
            type="aws:s3/bucketServerSideEncryptionConfiguration:"
                 "BucketServerSideEncryptionConfiguration",
            name="platform-raw-sse", urn=sse_urn,
            properties=_struct({"rules": [{"applyServerSideEncryptionByDefault": {
                "sseAlgorithm": "AES256"}}]}),
            propertyDependencies={"bucket": analyzer_pb2.AnalyzerPropertyDependencies(
                urns=[bucket_urn])}),
    ]))
    encryption = [d for d in response.diagnostics if d.policyName == "s3-bucket-encryption"]
    assert [d.urn for d in encryption] == [audit_urn]


def test_stack_rules_link_by_dependency_when_ids_are_unknown(
        analyzer: analyzer_pb2_grpc.AnalyzerStub) -> None:
    """A first preview: the bucket's id and its provider-computed inline settings are
    unknown; its config resources are linked by the engine's property dependencies."""
    bucket_urn = "urn:pulumi:dev::dask-platform::aws:s3/bucket:Bucket::platform-raw"
    unknown_bucket = _struct({"bucket": UNKNOWN_STRING_VALUE, "arn": UNKNOWN_STRING_VALUE,
                              "serverSideEncryptionConfiguration": UNKNOWN_OBJECT_VALUE,
                              "versioning": UNKNOWN_OBJECT_VALUE})

    def config(kind: str, props: dict[str, Any]) -> analyzer_pb2.AnalyzerResource:
        return analyzer_pb2.AnalyzerResource(
            type=f"aws:s3/{kind[0].lower()}{kind[1:]}:{kind}", name=f"platform-raw-{kind}",
            urn=f"urn:pulumi:dev::dask-platform::aws:s3/{kind}::platform-raw-{kind}",
            properties=_struct({"bucket": UNKNOWN_STRING_VALUE, **props}),
            propertyDependencies={"bucket": analyzer_pb2.AnalyzerPropertyDependencies(
                urns=[bucket_urn])})

    response = analyzer.AnalyzeStack(analyzer_pb2.AnalyzeStackRequest(resources=[
        analyzer_pb2.AnalyzerResource(type="aws:s3/bucket:Bucket", name="platform-raw",
                                      urn=bucket_urn, properties=unknown_bucket),
        config("BucketServerSideEncryptionConfiguration", {"rules": [
            {"applyServerSideEncryptionByDefault": {"sseAlgorithm": "aws:kms"}}]}),
        config("BucketVersioning", {"versioningConfiguration": {"status": "Enabled"}}),
        config("BucketPublicAccessBlock", {"blockPublicAcls": True, "blockPublicPolicy": True,
                                           "ignorePublicAcls": True,
                                           "restrictPublicBuckets": True}),
    ]))
    s3 = [(d.policyName, d.message) for d in response.diagnostics
          if d.policyName.startswith("s3-")]
    assert [name for name, _ in s3] == ["s3-raw-lifecycle", "s3-raw-lifecycle"], s3


def test_policy_config_reaches_the_rule(analyzer: analyzer_pb2_grpc.AnalyzerStub) -> None:
    group = {"minSize": 5, "maxSize": 30, "tags": [{"key": k, "value": v} for k, v in TAGS.items()]}
    assert [d[0] for d in analyze(analyzer, "aws:autoscaling/group:Group", "workers", group)] == [
        "asg-size-bounds"]
    analyzer.Configure(analyzer_pb2.ConfigureAnalyzerRequest(policyConfig={
        "asg-size-bounds": analyzer_pb2.PolicyConfig(
            enforcementLevel=MANDATORY, properties=_struct({"maxSizeCeiling": 40}))}))
    try:
        assert analyze(analyzer, "aws:autoscaling/group:Group", "workers", group) == []
    finally:
        analyzer.Configure(analyzer_pb2.ConfigureAnalyzerRequest(policyConfig={}))
