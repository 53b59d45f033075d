"""Who is where in the rehearsal: every host's namespace, address and security groups.

Addresses follow the stack: platform hosts take addresses in the subnets the stack cuts
from ``vpcCidr`` (the gateway and scheduler in the first private subnet, as the stack
places them; workers spread over both private subnets; the ALB in the private subnets
when it is internal, else the public ones). Outside the VPC: the team's network (a user
in ``allowedCidrs``), FreeIPA, and AWS's endpoints with the instance metadata service.
"""

from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass, field

from daskplatform.network_plan import subnet_cidrs
from daskplatform.settings import PlatformSettings

NAMESPACE_PREFIX = "dp-"
BRIDGE_NAMESPACE = "dp-vpc"
"""The namespace the bridge joining every host lives in (the VPC's fabric)."""
IMDS_ADDRESS = "169.254.169.254"
AWS_ADDRESS = "10.200.0.10"
"""AWS's API endpoints (moto) and, beside them, the instance metadata service."""
IPA_ADDRESS = "10.200.0.20"
"""FreeIPA (slapd), outside the VPC like the team's directory."""
PLATFORM_ROLES = ("gateway", "scheduler", "worker")


@dataclass(frozen=True)
class Host:
    name: str
    """``alb``, ``gateway``, ``worker-1``...; its namespace is ``dp-<name>``."""
    address: str
    prefix_length: int
    groups: tuple[str, ...] = ()
    """Security groups (roles) of the host; none for hosts outside AWS's groups."""
    role: str = ""
    """Platform role (gateway, scheduler, worker) booted by host-setup, else empty."""
    subnet: str = ""

    @property
    def namespace(self) -> str:
        return f"{NAMESPACE_PREFIX}{self.name}"

    @property
    def interface(self) -> str:
        """The bridge-side end of its veth pair (15 characters at most)."""
        return f"v-{self.name}"[:15]


@dataclass(frozen=True)
class Topology:
    hosts: tuple[Host, ...] = field(default_factory=tuple)

    def host(self, name: str) -> Host:
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(name)

    def in_group(self, group: str) -> list[Host]:
        return [h for h in self.hosts if group in h.groups]

    def platform_hosts(self) -> list[Host]:
        return [h for h in self.hosts if h.role]

    @property
    def workers(self) -> list[Host]:
        return [h for h in self.hosts if h.role == "worker"]

    def to_dict(self) -> dict:
        return {"hosts": [asdict(h) for h in self.hosts]}

    @classmethod
    def from_dict(cls, raw: dict) -> Topology:
        return cls(tuple(Host(**{**h, "groups": tuple(h["groups"])}) for h in raw["hosts"]))


def _address(subnet: str, index: int) -> tuple[str, int]:
    network = ipaddress.ip_network(subnet)
    return str(network.network_address + index), network.prefixlen


def _user_address(settings: PlatformSettings) -> tuple[str, int]:
    """A user's machine in the first ``allowedCidrs`` range (the team's network)."""
    network = ipaddress.ip_network(settings.allowed_cidrs[0])
    if network.version != 4 or network.num_addresses < 16:
        raise ValueError(f"the rehearsal puts a user in the first allowedCidrs range, which "
                         f"must be IPv4 with room for hosts; got {network}")
    return str(network.network_address + 10), network.prefixlen


def build_topology(settings: PlatformSettings, workers: int) -> Topology:
    """The stack's hosts for ``settings`` with ``workers`` worker nodes."""
    public, private = subnet_cidrs(settings.vpc_cidr)
    alb_subnet = private[0] if settings.internal_alb else public[0]

    def host(name: str, subnet: str, index: int, groups: tuple[str, ...],
             role: str = "") -> Host:
        address, length = _address(subnet, index)
        return Host(name, address, length, groups, role, subnet)

    hosts = [
        host("alb", alb_subnet, 10, ("alb",)),
        host("gateway", private[0], 20, ("gateway",), "gateway"),
        host("scheduler", private[0], 30, ("scheduler",), "scheduler"),
        *(host(f"worker-{i}", private[(i - 1) % len(private)], 40 + i, ("worker",), "worker")
          for i in range(1, workers + 1)),
        host("client", private[1], 100, ("client",)),
        Host("user", *_user_address(settings)),
        Host("aws", AWS_ADDRESS, 24),
        Host("ipa", IPA_ADDRESS, 24),
    ]
    return Topology(tuple(hosts))
