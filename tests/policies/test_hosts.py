"""IMDSv2 and public-IP rules for instances and launch templates."""

from __future__ import annotations

from policies.encryption import INSTANCE, LAUNCH_TEMPLATE
from tests.policies.support import run


def test_imdsv2_required_passes() -> None:
    for resource_type in (LAUNCH_TEMPLATE, INSTANCE):
        props = {"metadataOptions": {"httpTokens": "required", "httpEndpoint": "enabled"}}
        assert run("imdsv2-required", resource_type, props) == []


def test_imdsv1_fails_on_template_and_instance() -> None:
    optional = {"metadataOptions": {"httpTokens": "optional"}}
    expected = [("metadataOptions.httpTokens is optional; set "
                "metadataOptions.httpTokens='required' (IMDSv2)")]
    assert run("imdsv2-required", LAUNCH_TEMPLATE, optional) == expected
    assert run("imdsv2-required", INSTANCE, optional) == expected


def test_unset_metadata_options_fail() -> None:
    assert run("imdsv2-required", LAUNCH_TEMPLATE, {}) == [
        ("metadataOptions.httpTokens is unset (optional); set "
        "metadataOptions.httpTokens='required' (IMDSv2)")]


def test_instance_from_template_defers_to_template() -> None:
    assert run("imdsv2-required", INSTANCE, {"launchTemplate": {"id": "lt-1"}}) == []
    # but its own options, if given, still count
    props = {"launchTemplate": {"id": "lt-1"}, "metadataOptions": {"httpTokens": "optional"}}
    assert run("imdsv2-required", INSTANCE, props) != []


def test_public_ip_on_instance_fails() -> None:
    assert run("no-public-ip", INSTANCE, {"associatePublicIpAddress": True}) == [
        ("instance gets a public IP; set associatePublicIpAddress=False and reach it through "
        "the ALB or SSM")]
    assert run("no-public-ip", INSTANCE, {"associatePublicIpAddress": False}) == []


def test_public_ip_on_template_interface_fails() -> None:
    props = {"networkInterfaces": [{"associatePublicIpAddress": "false"},
                                   {"associatePublicIpAddress": "true"}]}
    assert run("no-public-ip", LAUNCH_TEMPLATE, props) == [
        "networkInterfaces[1] gets a public IP; set associatePublicIpAddress='false'"]
    assert run("no-public-ip", LAUNCH_TEMPLATE, {"networkInterfaces": [
        {"associatePublicIpAddress": "false"}]}) == []
