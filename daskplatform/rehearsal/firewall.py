"""The stack's security groups as nftables rules, one table per host namespace.

Rendered from ``daskplatform.network_plan.security_group_rules`` (the table the stack
declares its rules from): a host in groups G accepts TCP on a rule's ports from the
members of its peer group (or the rule's CIDR) when the rule is an ingress rule of one
of G, and may open connections the egress rules of G allow; everything else is
dropped, both ways, as AWS does for a security group. Replies to accepted connections
pass (security groups are stateful). The instance metadata service is reachable, as
on EC2, where security groups do not filter it.

Each accept rule carries a counter and the rule's name, so the rehearsal can tell
which flows carried traffic.
"""

from __future__ import annotations

import json
import subprocess
from collections import defaultdict
from dataclasses import dataclass

from daskplatform.network_plan import Rule, security_group_rules
from daskplatform.rehearsal.topology import IMDS_ADDRESS, Host, Topology
from daskplatform.settings import PlatformSettings

TABLE = "dp_security_groups"
IMDS_RULE = "imds"


@dataclass(frozen=True)
class Accept:
    """One rendered accept rule: a flow of the table as this host sees it."""

    chain: str
    """``input`` (ingress) or ``output`` (egress)."""
    peers: tuple[str, ...]
    """Addresses or CIDR blocks on the other end."""
    ports: tuple[int, int]
    name: str

    def render(self) -> str:
        direction = "saddr" if self.chain == "input" else "daddr"
        peers = self.peers[0] if len(self.peers) == 1 else "{ " + ", ".join(self.peers) + " }"
        low, high = self.ports
        ports = str(low) if low == high else f"{low}-{high}"
        return (f"ip {direction} {peers} tcp dport {ports} counter accept "
                f'comment "{self.name}"')


def _peers(rule: Rule, topology: Topology) -> tuple[str, ...]:
    if rule.peer_is_group:
        return tuple(h.address for h in topology.in_group(rule.peer))
    return (rule.peer,)


def accepts(host: Host, rules: list[Rule], topology: Topology) -> list[Accept]:
    """The rules of ``host``'s groups with a peer that exists in the rehearsal (groups
    without hosts here, such as EFS, have nothing to accept)."""
    found = []
    for rule in rules:
        if rule.group not in host.groups or ":" in rule.peer:  # IPv6 ranges: none here
            continue
        peers = _peers(rule, topology)
        if peers:
            chain = "input" if rule.direction == "ingress" else "output"
            found.append(Accept(chain, peers, rule.ports, rule.name))
    return found


def render(host: Host, settings: PlatformSettings, topology: Topology) -> str:
    """An ``nft -f`` script that replaces this host's table: default drop both ways."""
    by_chain: dict[str, list[str]] = defaultdict(list)
    for accept in accepts(host, security_group_rules(settings), topology):
        by_chain[accept.chain].append(accept.render())
    by_chain["output"].append(
        f'ip daddr {IMDS_ADDRESS} tcp dport 80 counter accept comment "{IMDS_RULE}"')
    chains = []
    for chain, iface in (("input", "iif"), ("output", "oif")):
        body = [f"type filter hook {chain} priority 0; policy drop;",
                f"{iface} lo accept", "ct state established,related accept",
                "ct state invalid drop", *by_chain[chain]]
        chains.append(f"  chain {chain} {{\n" + "".join(f"    {line}\n" for line in body)
                      + "  }\n")
    return (f"table inet {TABLE}\ndelete table inet {TABLE}\n"
            f"table inet {TABLE} {{\n{''.join(chains)}}}\n")


def apply(namespace: str, script: str) -> None:
    """Load ``script`` in ``namespace`` (atomically: all rules or none)."""
    subprocess.run(["ip", "netns", "exec", namespace, "nft", "-f", "-"], input=script,
                   text=True, check=True, capture_output=True)


def counters(namespace: str) -> dict[str, int]:
    """Packets accepted per rule name in ``namespace``'s table (0 if none)."""
    listing = subprocess.run(["ip", "netns", "exec", namespace, "nft", "-j", "list", "table",
                              "inet", TABLE], text=True, check=True,
                             capture_output=True).stdout
    found: dict[str, int] = {}
    for item in json.loads(listing)["nftables"]:
        rule = item.get("rule")
        if not rule or "comment" not in rule:
            continue
        packets = sum(expr["counter"]["packets"] for expr in rule["expr"] if "counter" in expr)
        found[rule["comment"]] = found.get(rule["comment"], 0) + packets
    return found
