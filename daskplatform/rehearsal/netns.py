"""The rehearsal's network: a namespace per host, joined by a bridge that lives in a
namespace of its own (a process in this machine's own namespace cannot reach addresses
inside namespaces, so nothing here depends on that), torn down without leftovers.

Every host gets one interface (``eth0``) with its address and an on-link default
route, so hosts in different subnets reach each other across the one bridge, as
instances in a VPC do through its router.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

from daskplatform.rehearsal.topology import (
    BRIDGE_NAMESPACE,
    IMDS_ADDRESS,
    NAMESPACE_PREFIX,
    Host,
    Topology,
)

BRIDGE = "br0"


class NetworkError(RuntimeError):
    """A command that builds the network failed; the message carries its output."""


def ip(*args: str, namespace: str | None = None) -> str:
    argv = ["ip", *(["-n", namespace] if namespace else []), *args]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise NetworkError(f"{' '.join(argv)}: {done.stderr.strip()}")
    return done.stdout


def existing_namespaces() -> list[str]:
    """The rehearsal's namespaces on this machine (``dp-*``)."""
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                             check=False).stdout
    names = [line.split()[0] for line in listing.splitlines() if line.strip()]
    return [n for n in names if n.startswith(NAMESPACE_PREFIX)]


def namespace_pids(namespace: str) -> list[int]:
    found = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True,
                           check=False)
    return [int(p) for p in found.stdout.split()]


def create(topology: Topology) -> None:
    """Namespaces, bridge, one veth pair per host, addresses and routes."""
    ip("netns", "add", BRIDGE_NAMESPACE)
    ip("link", "add", BRIDGE, "type", "bridge", namespace=BRIDGE_NAMESPACE)
    ip("link", "set", BRIDGE, "up", namespace=BRIDGE_NAMESPACE)
    for host in topology.hosts:
        create_host(host)


def create_host(host: Host) -> None:
    """One host's namespace on the bridge (also a replacement host, same address)."""
    ns = host.namespace
    ip("netns", "add", ns)
    ip("link", "add", host.interface, "type", "veth", "peer", "name", "eth0", "netns", ns)
    ip("link", "set", host.interface, "netns", BRIDGE_NAMESPACE)
    ip("link", "set", host.interface, "master", BRIDGE, "up", namespace=BRIDGE_NAMESPACE)
    ip("link", "set", "lo", "up", namespace=ns)
    ip("addr", "add", f"{host.address}/{host.prefix_length}", "dev", "eth0", namespace=ns)
    if host.name == "aws":  # the metadata service answers every host from here
        ip("addr", "add", f"{IMDS_ADDRESS}/32", "dev", "eth0", namespace=ns)
    ip("link", "set", "eth0", "up", namespace=ns)
    ip("route", "add", "default", "dev", "eth0", namespace=ns)


def destroy(namespaces: list[str], grace: float = 10) -> None:
    """Stop every process in ``namespaces`` (SIGTERM, SIGKILL after ``grace``), then
    delete them; their interfaces and nftables tables go with them."""
    pids = {pid for ns in namespaces for pid in namespace_pids(ns)}
    _signal(pids, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while pids and time.monotonic() < deadline:
        pids = {pid for pid in pids if _alive(pid)}
        time.sleep(0.1)
    _signal(pids, signal.SIGKILL)
    for ns in namespaces:
        for _ in range(50):  # a namespace whose last process is exiting is still busy
            if not namespace_pids(ns):
                break
            time.sleep(0.1)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def _signal(pids: set[int], sig: signal.Signals) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
