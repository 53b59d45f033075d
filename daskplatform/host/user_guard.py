"""What users' code may not reach from a host it runs on: the instance metadata service
(hence the instance role, and through it the agents' token in Secrets Manager) and the
node agent's port (which starts and stops any process on any node).

Every Dask process and notebook runs under its user's uid (at least ``MIN_USER_UID``);
the platform's own services run as root or system accounts below it. An nftables table
of its own rejects, by socket owner, what those uids send to 169.254.169.254 (and IMDS's
IPv6 address) and to the agent port on any address. Rejected, not dropped: user code
fails at once with "connection refused" instead of hanging. ``host-setup`` installs it
on scheduler and worker hosts at every boot (replacing the table: safe to run again).
"""

from __future__ import annotations

import subprocess

from daskplatform.node.spec import MIN_USER_UID
from daskplatform.settings import PortSettings

TABLE = "dask_platform_users"
IMDS_V4 = "169.254.169.254"
IMDS_V6 = "fd00:ec2::254"


def render(ports: PortSettings, min_uid: int = MIN_USER_UID) -> str:
    """An ``nft -f`` script that replaces the table (atomically: all rules or none)."""
    owner = f"meta skuid >= {min_uid}"
    rules = [
        f'{owner} ip daddr {IMDS_V4} counter reject comment "users-to-imds"',
        f'{owner} ip6 daddr {IMDS_V6} counter reject comment "users-to-imds-v6"',
        f'{owner} tcp dport {ports.node_agent} counter reject with tcp reset '
        f'comment "users-to-node-agent"',
    ]
    body = ["type filter hook output priority 0; policy accept;", *rules]
    return (f"table inet {TABLE}\ndelete table inet {TABLE}\n"
            f"table inet {TABLE} {{\n  chain output {{\n"
            + "".join(f"    {line}\n" for line in body) + "  }\n}\n")


def install(ports: PortSettings) -> None:
    """Load the table into this host's (this network namespace's) nftables."""
    subprocess.run(["nft", "-f", "-"], input=render(ports), text=True, check=True,
                   capture_output=True)
