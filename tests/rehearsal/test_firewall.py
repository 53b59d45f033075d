"""The stack's security groups rendered as nftables: exactly the table's rules for each
host's groups, default drop both ways; and, as root, the rules load and drop traffic
between two namespaces that the table does not allow."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from daskplatform.network_plan import security_group_rules
from daskplatform.rehearsal import firewall, netns
from daskplatform.rehearsal.topology import Host, Topology, build_topology
from daskplatform.settings import PlatformSettings, load_settings
from tests.test_settings import REQUIRED

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: network namespaces "
                                "and nftables (CI runs as root)")


@pytest.fixture
def settings() -> PlatformSettings:
    return load_settings(REQUIRED)


@pytest.fixture
def topology(settings: PlatformSettings) -> Topology:
    return build_topology(settings, workers=2)


def accepted(script: str, chain: str) -> set[tuple[str, str, str]]:
    """(peers, ports, rule name) of the accept rules in ``chain``."""
    body = script.split(f"chain {chain} {{", 1)[1].split("}\n", 1)[0]
    return set(re.findall(r'ip [sd]addr (\{[^}]+\}|\S+) tcp dport (\S+) counter accept '
                          r'comment "([^"]+)"', body))


def test_the_scheduler_host_accepts_and_opens_only_its_groups_flows(
        settings: PlatformSettings, topology: Topology) -> None:
    host = topology.host("scheduler")
    script = firewall.render(host, settings, topology)
    gateway = topology.host("gateway").address
    workers = ", ".join(w.address for w in topology.workers)
    assert accepted(script, "input") == {
        (gateway, "8790", "in-gateway-to-scheduler-8790"),
        (gateway, "9000-9199", "in-gateway-to-scheduler-9000"),
        (f"{{ {workers} }}", "9000-9199", "in-worker-to-scheduler-9000"),
    }
    assert accepted(script, "output") == {
        (gateway, "8786", "out-scheduler-to-gateway-8786"),
        (f"{{ {workers} }}", "9200-9999", "out-scheduler-to-worker-9200"),
        ("0.0.0.0/0", "443", "out-scheduler-to-any-443"),
        ("169.254.169.254", "80", "imds"),
    }
    for chain in ("input", "output"):
        assert f"hook {chain} priority 0; policy drop;" in script
    assert "established,related accept" in script and " 22 " not in script


def test_every_rule_of_the_table_reaches_the_hosts_of_its_group(
        settings: PlatformSettings, topology: Topology) -> None:
    """Each rule whose peer exists here is rendered on every host of its group (the EFS
    group has no host in the rehearsal, so its rules are the only ones missing)."""
    rendered = {h.name: firewall.render(h, settings, topology) for h in topology.hosts
                if h.groups}
    for rule in security_group_rules(settings):
        holders = [h for h in topology.hosts if rule.group in h.groups]
        for host in holders:
            present = f'comment "{rule.name}"' in rendered[host.name]
            assert present == (rule.peer != "efs"), (rule.name, host.name)
    alb = accepted(rendered["alb"], "input")
    assert ("10.20.0.0/16", "443", "in-allowed-0-to-alb-443") in alb
    assert ("10.20.0.0/16", "80", "in-allowed-0-to-alb-80") in alb
    assert (topology.host("client").address, "443", "in-client-to-alb-443") in alb


def test_the_rendering_follows_the_settings(topology: Topology) -> None:
    """A changed port in the settings changes the rules (the table, not a copy of it)."""
    moved = load_settings({**REQUIRED, "ports": {"nodeAgent": 8799}})
    script = firewall.render(topology.host("worker-1"), moved, topology)
    assert ("10.0.32.20", "8799", "in-gateway-to-worker-8799") in accepted(script, "input")
    assert "8790" not in script


@pytest.fixture
def two_hosts(settings: PlatformSettings) -> Iterator[tuple[Topology, Host, Host]]:
    """dp-gateway and dp-worker-1 on a bridge, no rules yet; removed afterwards."""
    if netns.existing_namespaces():
        pytest.fail("dp-* namespaces exist: is a rehearsal running? stop it first")
    full = build_topology(settings, workers=1)
    topology = Topology(tuple(h for h in full.hosts if h.name in ("gateway", "worker-1")))
    netns.create(topology)
    try:
        yield topology, topology.host("gateway"), topology.host("worker-1")
    finally:
        netns.destroy(netns.existing_namespaces())


def _connects(source: Host, target: Host, port: int) -> str:
    listener = subprocess.Popen(["ip", "netns", "exec", target.namespace, sys.executable,
                                 "-m", "daskplatform.rehearsal.probe", "listen", str(port)],
                                stdout=subprocess.PIPE, text=True)
    try:
        assert listener.stdout is not None and listener.stdout.readline().startswith("listen")
        return subprocess.run(["ip", "netns", "exec", source.namespace, sys.executable, "-m",
                               "daskplatform.rehearsal.probe", "connect", target.address,
                               str(port), "--timeout", "2"], capture_output=True, text=True,
                              check=True).stdout.strip()
    finally:
        listener.terminate()
        listener.wait(10)


@needs_root
def test_loaded_rules_drop_what_the_table_does_not_allow(
        settings: PlatformSettings, two_hosts: tuple[Topology, Host, Host]) -> None:
    topology, gateway, worker = two_hosts
    assert _connects(worker, gateway, 8000) == "open"  # no rules yet
    for host in (gateway, worker):
        firewall.apply(host.namespace, firewall.render(host, settings, topology))
    assert _connects(gateway, worker, 8790) == "open"  # gateway -> node agent
    assert _connects(worker, gateway, 8000) == "timeout"  # only the ALB may
    assert _connects(worker, gateway, 22) == "timeout"
    time.sleep(0.1)
    counted = firewall.counters(worker.namespace)
    assert counted["in-gateway-to-worker-8790"] > 0 and counted["in-worker-to-worker-9200"] == 0
