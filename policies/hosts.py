"""Host hardening: IMDSv2 only (no credential theft through SSRF on IMDSv1) and no
public addresses (hosts sit in private subnets behind the ALB)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from policies.encryption import INSTANCE, LAUNCH_TEMPLATE
from policies.model import is_true, items


def check_imdsv2(resource_type: str, name: str, props: Mapping[str, Any],
                 config: Mapping[str, Any]) -> list[str]:
    """An instance launched from a template inherits the template's options, which
    that template's own check covers."""
    if resource_type not in (LAUNCH_TEMPLATE, INSTANCE):
        return []
    options = props.get("metadataOptions")
    if options is None and resource_type == INSTANCE and props.get("launchTemplate") is not None:
        return []
    options = options or {}
    if options.get("httpEndpoint") == "disabled" or options.get("httpTokens") == "required":
        return []
    return [(f"metadataOptions.httpTokens is {options.get('httpTokens') or 'unset (optional)'}; "
            "set metadataOptions.httpTokens='required' (IMDSv2)")]


def check_no_public_ip(resource_type: str, name: str, props: Mapping[str, Any],
                       config: Mapping[str, Any]) -> list[str]:
    if resource_type == INSTANCE and is_true(props.get("associatePublicIpAddress")):
        return [("instance gets a public IP; set associatePublicIpAddress=False and reach it "
                "through the ALB or SSM")]
    if resource_type == LAUNCH_TEMPLATE:
        return [
            f"networkInterfaces[{index}] gets a public IP; set associatePublicIpAddress='false'"
            for index, interface in enumerate(items(props.get("networkInterfaces")))
            if is_true(interface.get("associatePublicIpAddress"))
        ]
    return []
