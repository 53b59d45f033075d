"""Encryption at rest and in transit: EFS, EBS volumes of hosts, ALB listeners."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from policies.model import ConfigOption, is_true, items

EFS_FILE_SYSTEM = "aws:efs/fileSystem:FileSystem"
LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
INSTANCE = "aws:ec2/instance:Instance"
LISTENER_TYPES = ("aws:lb/listener:Listener", "aws:alb/listener:Listener")

TLS_OPTIONS = {
    "sslPolicyPattern": ConfigOption(
        r"-(FS|TLS|TLS13)-1-[23](-|$)", "string",
        "Regex an HTTPS listener's sslPolicy must match: AWS policies whose minimum is "
        "TLS 1.2 or 1.3 (e.g. ELBSecurityPolicy-TLS13-1-2-2021-06)."),
}


def check_efs_encrypted(resource_type: str, name: str, props: Mapping[str, Any],
                        config: Mapping[str, Any]) -> list[str]:
    """Home directories and shared data live on EFS."""
    if resource_type != EFS_FILE_SYSTEM or is_true(props.get("encrypted")):
        return []
    return ["EFS file system is not encrypted at rest; set encrypted=True (optionally kmsKeyId)"]


def _launch_template_volumes(props: Mapping[str, Any]) -> list[str]:
    mappings = items(props.get("blockDeviceMappings"))
    if not mappings:
        return [("launch template has no blockDeviceMappings, so the root volume takes the "
                "AMI's unencrypted default; map the root device with ebs.encrypted='true'")]
    return [
        f"blockDeviceMappings[{index}] ({mapping.get('deviceName', '?')}) is not encrypted; "
        "set ebs.encrypted='true'"
        for index, mapping in enumerate(mappings)
        if mapping.get("ebs") is not None and not is_true(mapping["ebs"].get("encrypted"))
    ]


def _instance_volumes(props: Mapping[str, Any]) -> list[str]:
    root = props.get("rootBlockDevice")
    messages = []
    if root is None:
        if props.get("launchTemplate") is None:
            messages.append("instance has no rootBlockDevice, so the root volume takes the "
                            "AMI's unencrypted default; set rootBlockDevice.encrypted=True")
    elif not is_true(root.get("encrypted")):
        messages.append("rootBlockDevice is not encrypted; set rootBlockDevice.encrypted=True")
    messages += [
        f"ebsBlockDevices[{index}] ({device.get('deviceName', '?')}) is not encrypted; "
        "set encrypted=True"
        for index, device in enumerate(items(props.get("ebsBlockDevices")))
        if not is_true(device.get("encrypted"))
    ]
    return messages


def check_ebs_encrypted(resource_type: str, name: str, props: Mapping[str, Any],
                        config: Mapping[str, Any]) -> list[str]:
    """Host volumes hold spilled Dask data; an instance launched from a template is
    covered by the template's own check."""
    if resource_type == LAUNCH_TEMPLATE:
        return _launch_template_volumes(props)
    if resource_type == INSTANCE:
        return _instance_volumes(props)
    return []


def _redirects_to_https(action: Mapping[str, Any]) -> bool:
    redirect = action.get("redirect") or {}
    return action.get("type") == "redirect" and str(redirect.get("protocol")).upper() == "HTTPS"


def check_listener_tls(resource_type: str, name: str, props: Mapping[str, Any],
                       config: Mapping[str, Any]) -> list[str]:
    """Users log in through the ALB: TLS 1.2+ only, plain HTTP only to redirect."""
    if resource_type not in LISTENER_TYPES:
        return []
    protocol = str(props.get("protocol") or "HTTP").upper()
    if protocol in ("HTTPS", "TLS"):
        policy = props.get("sslPolicy") or ""
        if re.search(config["sslPolicyPattern"], policy):
            return []
        shown = policy or "unset (AWS default ELBSecurityPolicy-2016-08 allows TLS 1.0)"
        return [(f"{protocol} listener sslPolicy is {shown}; set a TLS 1.2+ policy such as "
                "ELBSecurityPolicy-TLS13-1-2-2021-06")]
    if protocol == "HTTP":
        actions = items(props.get("defaultActions"))
        if actions and all(_redirects_to_https(a) for a in actions):
            return []
        return [("HTTP listener does not only redirect to HTTPS; make its default action "
                "type=redirect with redirect.protocol=HTTPS (port 443, HTTP_301)")]
    return [(f"listener protocol {protocol} is not encrypted HTTP; use HTTPS with a TLS 1.2+ "
            "sslPolicy (or HTTP that redirects to HTTPS)")]
