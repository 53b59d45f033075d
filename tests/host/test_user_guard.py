"""The user guard: users' uids cannot reach instance metadata or the node agent, while
root (the agent itself, host-setup) still can. Proven with the real rules in a network
namespace of the test's own, with listeners standing in for IMDS and the agent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from daskplatform.host import user_guard
from daskplatform.settings import PortSettings

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: a network namespace "
                                "and nftables (CI runs as root)")

PROBE = textwrap.dedent("""
    import json, os, socket, subprocess, sys, threading
    from daskplatform.host import user_guard
    from daskplatform.settings import PortSettings

    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(["ip", "addr", "add", "169.254.169.254/32", "dev", "lo"], check=True)
    ports = PortSettings()
    targets = {"imds": ("169.254.169.254", 80), "agent": ("127.0.0.1", ports.node_agent),
               "other": ("127.0.0.1", 9300)}
    for host, port in targets.values():
        server = socket.create_server((host, port))
        threading.Thread(target=lambda s=server: [s.accept() for _ in iter(int, 1)],
                         daemon=True).start()
    if sys.argv[1] == "guarded":
        user_guard.install(ports)

    def reach(uid):
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.setgid(uid); os.setuid(uid)
            seen = {}
            for name, address in targets.items():
                try:
                    socket.create_connection(address, timeout=2).close()
                    seen[name] = "connected"
                except OSError as exc:
                    seen[name] = type(exc).__name__
            os.write(write, json.dumps(seen).encode()); os._exit(0)
        os.close(write); os.waitpid(pid, 0)
        return json.loads(os.read(read, 4096))

    print(json.dumps({"root": reach(0), "user": reach(10001), "system": reach(999)}))
""")


def _probe(mode: str) -> dict[str, dict[str, str]]:
    result = subprocess.run(["unshare", "--net", sys.executable, "-c", PROBE, mode],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_rules_name_each_fence_and_replace_the_table_atomically() -> None:
    script = user_guard.render(PortSettings(node_agent=8790), min_uid=1000)
    assert script.startswith(f"table inet {user_guard.TABLE}\n"
                             f"delete table inet {user_guard.TABLE}\n")
    assert "meta skuid >= 1000 ip daddr 169.254.169.254 counter reject" in script
    assert "meta skuid >= 1000 ip6 daddr fd00:ec2::254 counter reject" in script
    assert "meta skuid >= 1000 tcp dport 8790 counter reject with tcp reset" in script
    assert "policy accept" in script  # nothing else of users' traffic is touched


@needs_root
def test_users_cannot_reach_imds_or_the_agent_and_root_still_can() -> None:
    open_ = _probe("open")
    assert open_["user"] == {"imds": "connected", "agent": "connected", "other": "connected"}
    guarded = _probe("guarded")
    assert guarded["user"]["imds"] in ("ConnectionRefusedError", "PermissionError")
    assert guarded["user"]["agent"] == "ConnectionRefusedError"
    assert guarded["user"]["other"] == "connected"  # Dask's own ports stay open
    assert guarded["root"] == guarded["system"] == {
        "imds": "connected", "agent": "connected", "other": "connected"}
