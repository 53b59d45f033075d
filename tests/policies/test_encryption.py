"""EFS, EBS and listener encryption rules."""

from __future__ import annotations

import pytest

from policies.encryption import EFS_FILE_SYSTEM, INSTANCE, LAUNCH_TEMPLATE
from tests.policies.support import run

ENCRYPTED_TEMPLATE = {"blockDeviceMappings": [
    {"deviceName": "/dev/xvda", "ebs": {"encrypted": "true", "volumeSize": 30.0}}]}


def test_efs_unencrypted_fails_and_encrypted_passes() -> None:
    assert run("efs-encrypted", EFS_FILE_SYSTEM, {"encrypted": False}) == [
        "EFS file system is not encrypted at rest; set encrypted=True (optionally kmsKeyId)"]
    assert run("efs-encrypted", EFS_FILE_SYSTEM, {}) != []
    assert run("efs-encrypted", EFS_FILE_SYSTEM, {"encrypted": True}) == []


def test_launch_template_with_encrypted_root_passes() -> None:
    assert run("ebs-encrypted", LAUNCH_TEMPLATE, ENCRYPTED_TEMPLATE) == []


def test_launch_template_unencrypted_volume_fails() -> None:
    props = {"blockDeviceMappings": [{"deviceName": "/dev/xvda", "ebs": {"encrypted": "false"}}]}
    assert run("ebs-encrypted", LAUNCH_TEMPLATE, props) == [
        "blockDeviceMappings[0] (/dev/xvda) is not encrypted; set ebs.encrypted='true'"]


def test_launch_template_without_mappings_fails() -> None:
    assert run("ebs-encrypted", LAUNCH_TEMPLATE, {"imageId": "ami-1"}) == [
        ("launch template has no blockDeviceMappings, so the root volume takes the AMI's "
        "unencrypted default; map the root device with ebs.encrypted='true'")]


def test_instance_volumes() -> None:
    assert run("ebs-encrypted", INSTANCE, {"rootBlockDevice": {"encrypted": True}}) == []
    assert run("ebs-encrypted", INSTANCE, {"rootBlockDevice": {"encrypted": False},
                                           "ebsBlockDevices": [{"deviceName": "/dev/sdf"}]}) == [
        "rootBlockDevice is not encrypted; set rootBlockDevice.encrypted=True",
        "ebsBlockDevices[0] (/dev/sdf) is not encrypted; set encrypted=True"]
    assert run("ebs-encrypted", INSTANCE, {}) == [
        ("instance has no rootBlockDevice, so the root volume takes the AMI's unencrypted "
        "default; set rootBlockDevice.encrypted=True")]
    # From a launch template: the template's own check covers the root volume.
    assert run("ebs-encrypted", INSTANCE, {"launchTemplate": {"id": "lt-1"}}) == []


@pytest.mark.parametrize("policy", ["ELBSecurityPolicy-TLS13-1-2-2021-06",
                                    "ELBSecurityPolicy-TLS-1-2-Ext-2018-06",
                                    "ELBSecurityPolicy-FS-1-2-Res-2020-10",
                                    "ELBSecurityPolicy-TLS13-1-3-2021-06"])
def test_https_with_tls12_policy_passes(policy: str) -> None:
    props = {"protocol": "HTTPS", "port": 443.0, "sslPolicy": policy}
    assert run("alb-listener-tls", "aws:lb/listener:Listener", props) == []


@pytest.mark.parametrize("policy", ["ELBSecurityPolicy-2016-08", "ELBSecurityPolicy-TLS-1-1-2017-01",
                                    "ELBSecurityPolicy-TLS13-1-0-2021-06"])
def test_https_with_old_tls_fails(policy: str) -> None:
    props = {"protocol": "HTTPS", "sslPolicy": policy}
    assert run("alb-listener-tls", "aws:alb/listener:Listener", props) == [
        (f"HTTPS listener sslPolicy is {policy}; set a TLS 1.2+ policy such as "
        "ELBSecurityPolicy-TLS13-1-2-2021-06")]


def test_https_without_policy_fails() -> None:
    [message] = run("alb-listener-tls", "aws:lb/listener:Listener", {"protocol": "HTTPS"})
    assert "unset (AWS default ELBSecurityPolicy-2016-08 allows TLS 1.0)" in message


def test_http_redirect_passes_and_forward_fails() -> None:
    redirect = {"protocol": "HTTP", "defaultActions": [
        {"type": "redirect", "redirect": {"protocol": "HTTPS", "port": "443",
                                          "statusCode": "HTTP_301"}}]}
    forward = {"protocol": "HTTP", "defaultActions": [{"type": "forward", "targetGroupArn": "t"}]}
    assert run("alb-listener-tls", "aws:lb/listener:Listener", redirect) == []
    assert run("alb-listener-tls", "aws:lb/listener:Listener", forward) == [
        ("HTTP listener does not only redirect to HTTPS; make its default action type=redirect "
        "with redirect.protocol=HTTPS (port 443, HTTP_301)")]


def test_plain_tcp_listener_fails() -> None:
    assert run("alb-listener-tls", "aws:lb/listener:Listener", {"protocol": "TCP"}) == [
        ("listener protocol TCP is not encrypted HTTP; use HTTPS with a TLS 1.2+ sslPolicy "
        "(or HTTP that redirects to HTTPS)")]
