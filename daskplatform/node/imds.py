"""This EC2 instance's private IPv4, id and type from the instance metadata service, IMDSv2
only (the hosts' launch template requires session tokens): a token PUT, then GETs
carrying it, with short timeouts so a host that is not on EC2 fails fast."""

from __future__ import annotations

import ipaddress
import os
import urllib.error
import urllib.request
from dataclasses import dataclass

IMDS = "imds"
"""The value of ``--advertise-host`` that means: this EC2 instance's private IPv4."""
ENDPOINT_ENV = "AWS_EC2_METADATA_SERVICE_ENDPOINT"
"""The variable botocore reads too; unset means the link-local address below."""
DEFAULT_ENDPOINT = "http://169.254.169.254"
TOKEN_TTL_SECONDS = 60
"""The session token is used for two reads at start, then dropped."""


class MetadataUnavailable(RuntimeError):
    """No instance metadata service answered: not on EC2, or IMDS is disabled."""


@dataclass(frozen=True)
class InstanceIdentity:
    instance_id: str
    private_ipv4: str
    instance_type: str = ""


def _endpoint() -> str:
    return (os.environ.get(ENDPOINT_ENV) or DEFAULT_ENDPOINT).rstrip("/")


def _call(request: urllib.request.Request, timeout: float) -> str:
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.read().decode("ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:  # URLError and HTTPError are OSErrors
        raise MetadataUnavailable(
            f"instance metadata at {_endpoint()} did not answer {request.get_method()} "
            f"{request.full_url} ({exc}); --advertise-host imds works only on EC2 "
            "with IMDS enabled") from None


def instance_identity(timeout: float = 2.0) -> InstanceIdentity:
    """This instance's id and private IPv4 address."""
    base = _endpoint()
    token = _call(urllib.request.Request(
        f"{base}/latest/api/token", method="PUT",
        headers={"X-aws-ec2-metadata-token-ttl-seconds": str(TOKEN_TTL_SECONDS)}), timeout)

    def read(path: str) -> str:
        value = _call(urllib.request.Request(
            f"{base}/latest/meta-data/{path}",
            headers={"X-aws-ec2-metadata-token": token}), timeout)
        if not value:
            raise MetadataUnavailable(f"instance metadata {path} is empty at {base}")
        return value

    address = read("local-ipv4")
    try:
        ipaddress.IPv4Address(address)
    except ValueError:
        raise MetadataUnavailable(
            f"instance metadata local-ipv4 at {base} is {address!r}, not an IPv4 address"
        ) from None
    return InstanceIdentity(instance_id=read("instance-id"), private_ipv4=address,
                            instance_type=read("instance-type"))
