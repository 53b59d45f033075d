"""``rehearse --demo``: the scenario through the topology, the flows the security groups
must refuse, and which of the table's flows carried traffic.

Every flow of the table is either used by the scenario or listed in ``NOT_USED`` with
the reason (README, "Rehearsal"); a flow that is neither fails the demo, so a new rule
needs a use or a reason.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlparse

from daskplatform.network_plan import security_group_rules
from daskplatform.rehearsal import firewall
from daskplatform.rehearsal.aws_host import LIFECYCLE_LINE
from daskplatform.rehearsal.orchestrator import (
    DRAIN_SECONDS,
    ORPHAN_GRACE_SECONDS,
    Rehearsal,
    say,
)
from daskplatform.rehearsal.scenario import PASSWORDS, WORKERS
from daskplatform.runtime_version import VERSION_FILE
from daskplatform.settings import SERVICE_PREFIX, RuntimeSettings
from daskplatform.status_cli import PASSWORD_ENV

SSH_PORT = 22
NOT_USED: dict[str, str] = {}
"""Flows of the table the scenario does not use, with why they exist. EFS flows are
not rendered at all: the rehearsal has no NFS server (a shared directory stands in)."""


@dataclass
class Outcome:
    steps: list[tuple[str, bool, str]] = field(default_factory=list)

    def record(self, name: str, ok: bool, detail: str) -> bool:
        self.steps.append((name, ok, detail))
        say(f"{'ok    ' if ok else 'FAILED'} {name}: {detail}")
        return ok

    @property
    def ok(self) -> bool:
        return all(ok for _, ok, _ in self.steps)


def _step(rehearsal: Rehearsal, host: str, step: str, *args: str) -> dict:
    done = rehearsal.run_in(host, ["-m", "daskplatform.rehearsal.scenario", step,
                                   str(rehearsal.plan_file), *args])
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        return {"ok": False, "error": (done.stdout + done.stderr)[-2000:]}
    return json.loads(lines[-1])


def _connect(rehearsal: Rehearsal, host: str, address: str, port: int) -> str:
    done = rehearsal.run_in(host, ["-m", "daskplatform.rehearsal.probe", "connect", address,
                                   str(port), "--timeout", "2"])
    return done.stdout.strip() or done.stderr.strip()[-200:]


def _until(probe: Callable[[], dict], done: Callable[[dict], bool],
           timeout: float) -> dict:
    """``probe()`` again until ``done`` says so or ``timeout`` passes; the last answer."""
    deadline = time.monotonic() + timeout
    found = probe()
    while not done(found) and time.monotonic() < deadline:
        time.sleep(2)
        found = probe()
    return found


def refused_flows(rehearsal: Rehearsal, scheduler_address: str,
                  outcome: Outcome) -> None:
    """Flows the table does not allow are dropped, where the same port answers a source
    the table does allow (so the refusal is the security group, not a missing server)."""
    top = rehearsal.topology
    ports = RuntimeSettings.from_json(rehearsal.plan.runtime_settings).ports
    scheduler = urlparse(scheduler_address)
    worker_2 = top.host("worker-2") if len(top.workers) > 1 else top.workers[0]
    gateway = top.host("gateway")
    listener = rehearsal.spawn_in("scheduler", ["-m", "daskplatform.rehearsal.probe",
                                                "listen", str(SSH_PORT)])
    assert listener.stdout is not None
    listener.stdout.readline()  # "listening on 22"
    checks: list[tuple[str, str, str, int, str]] = [
        ("client -> scheduler range", "client", scheduler.hostname or "", scheduler.port or 0,
         "timeout"),
        ("worker -> scheduler range (allowed)", "worker-1", scheduler.hostname or "",
         scheduler.port or 0, "open"),
        ("worker-1 -> worker-2's agent port", "worker-1", worker_2.address, ports.node_agent,
         "timeout"),
        ("gateway -> worker-2's agent port (allowed)", "gateway", worker_2.address,
         ports.node_agent, "open"),
        ("user -> gateway host, bypassing the ALB", "user", gateway.address,
         ports.gateway_http, "timeout"),
        ("user -> gateway's scheduler proxy", "user", gateway.address, ports.gateway_tls,
         "timeout"),
        ("scheduler -> 22 on itself (a listener is there)", "scheduler", "127.0.0.1",
         SSH_PORT, "open"),
        *((f"{name} -> scheduler:22", name, top.host("scheduler").address, SSH_PORT, "timeout")
          for name in ("gateway", "worker-1", "client", "alb", "user")),
    ]
    try:
        for label, source, address, port, expected in checks:
            found = _connect(rehearsal, source, address, port)
            outcome.record(f"flow {label}", found == expected,
                           f"{source} -> {address}:{port} {found} (expected {expected})")
    finally:
        listener.terminate()
        listener.wait(10)


def flows_used(rehearsal: Rehearsal, outcome: Outcome) -> dict[str, int]:
    """Packets per flow of the table (ingress counted where it lands, egress-only rules
    where they leave), over every namespace; fails the demo on a flow that is enforced,
    unused and unexplained."""
    packets = dict(rehearsal.retired_counters)  # replaced hosts count too
    for host in rehearsal.topology.hosts:
        if host.groups:
            for name, count in firewall.counters(host.namespace).items():
                packets[name] = packets.get(name, 0) + count
    rules = security_group_rules(rehearsal.settings)
    ingress = {r.name.removeprefix("in-") for r in rules if r.direction == "ingress"}
    table = {r.name.split("-", 1)[1] for r in rules}
    flows: dict[str, int] = {}
    for rule in rules:
        flow = rule.name.split("-", 1)[1]
        if rule.direction == "egress" and flow in ingress:
            continue  # counted at the receiver
        if rule.name in packets:
            flows[flow] = packets[rule.name]
    used = sorted(f for f, n in flows.items() if n)
    unused = sorted(f for f, n in flows.items() if not n)
    explained = [f for f in unused if f in NOT_USED]
    unexplained = [f for f in unused if f not in NOT_USED]
    outcome.record("flows", not unexplained,
                   f"{len(table)} flows in the table, {len(flows)} enforced here (EFS has no "
                   f"NFS server here), {len(used)} used by the scenario; unused, with a "
                   f"reason: {', '.join(explained) or 'none'}"
                   + (f"; UNUSED WITHOUT A REASON: {', '.join(unexplained)}"
                      if unexplained else ""))
    return flows


def launch_hooks(rehearsal: Rehearsal, outcome: Outcome) -> None:
    log = rehearsal.processes["aws"].log.read_text(errors="replace")
    done = [line for line in log.splitlines() if LIFECYCLE_LINE in line and "CONTINUE" in line]
    outcome.record("worker launch hooks", len(done) == len(rehearsal.topology.workers),
                   f"{len(done)} of {len(rehearsal.topology.workers)} workers completed the "
                   "worker group's launch hook after their agent served")


def run(rehearsal: Rehearsal) -> Outcome:
    outcome = Outcome()
    say("demo: the scenario through the topology")
    web = _step(rehearsal, "user", "web")
    outcome.record("user -> ALB: HTTPS, LDAPS login", web["ok"],
                   json.dumps({k: web.get(k) for k in ("redirect", "logins", "error")}))
    compute = _step(rehearsal, "client", "compute")
    outcome.record("client -> ALB -> gateway; scheduler proxy 8786; shuffle", compute["ok"],
                   json.dumps({k: compute.get(k) for k in
                               ("cluster", "worker_hosts", "right_result", "error")}))
    if compute.get("cluster"):
        name = compute["cluster"]
        dashboard = _step(rehearsal, "user", "dashboard", name)
        outcome.record("user -> ALB: the cluster's dashboard, for its owner only", dashboard["ok"],
                       json.dumps(dashboard))
        refused_flows(rehearsal, compute["scheduler"], outcome)
        busy = _step(rehearsal, "gateway", "aws")
        outcome.record("gateway -> AWS: busy worker hosts protected from scale-in, pool "
                       "metrics put", busy["protected"] == compute["worker_hosts"]
                       and {"BacklogNodes", "IdleNodes"} <= set(busy["pool_metrics"]),
                       json.dumps({k: busy.get(k) for k in ("protected", "pool_metrics",
                                                            "error")}))
        replace_gateway(rehearsal, name, outcome)
        stop = _step(rehearsal, "client", "stop", name)
        outcome.record("client: cluster stopped", stop["ok"], json.dumps(stop))
        released = _until(lambda: _step(rehearsal, "gateway", "aws"),
                          lambda found: found.get("protected") == [], 60)
        outcome.record("gateway -> AWS: emptied worker hosts released for scale-in",
                       released.get("protected") == [], json.dumps(released))
        notebook = _step(rehearsal, "user", "notebook")
        outcome.record("user -> ALB -> hub -> JupyterLab on a worker node: Gateway() "
                       "computes; no IMDS or agent from user code; clusters stop with it",
                       notebook["ok"], json.dumps(notebook))
        released = _until(lambda: _step(rehearsal, "gateway", "aws"),
                          lambda found: found.get("protected") == [], 60)
        outcome.record("gateway -> AWS: the notebook's worker host released once it stopped",
                       released.get("protected") == [], json.dumps(released))
        data = _step(rehearsal, "client", "data")
        outcome.record("an analyst's task -> gateway -> STS: the group's short-lived "
                       "credentials read processed data, are refused on raw and on "
                       "writing; no IMDS or agent", data["ok"], json.dumps(data))
        lose_gateway_database(rehearsal, outcome)
        roll_out(rehearsal, outcome)
    launch_hooks(rehearsal, outcome)
    flows_used(rehearsal, outcome)
    return outcome


def replace_gateway(rehearsal: Rehearsal, name: str, outcome: Outcome) -> None:
    """The gateway host replaced (namespace and local disk gone, a fresh host on the
    same address with the state volume): the running cluster stays."""
    took = rehearsal.replace_host("gateway")
    found = _step(rehearsal, "client", "resume", name)
    outcome.record("gateway host replaced, state kept: the cluster is listed, reachable "
                   "and computing; a new cluster starts", found["ok"],
                   f"new host serving after {took:.1f}s; " + json.dumps(found))


def lose_gateway_database(rehearsal: Rehearsal, outcome: Outcome) -> None:
    """A cluster runs; the gateway comes back with no state at all: its processes are
    found, stopped after the orphan grace, and no node stays protected."""
    held = _step(rehearsal, "client", "compute")
    if not held.get("cluster"):
        outcome.record("gateway database lost: a cluster to orphan", False, json.dumps(held))
        return
    rehearsal.replace_host("gateway", lose_state=True)
    began = time.monotonic()
    released = _until(lambda: _step(rehearsal, "gateway", "aws"),
                      lambda found: found.get("protected") == [], ORPHAN_GRACE_SECONDS + 90)
    took = time.monotonic() - began
    log = rehearsal.services_log("gateway")
    found = log.count("is in no record of this gateway")
    stopped = log.count("Reconcile: stopping orphan")
    expected = 1 + WORKERS  # the scheduler and its workers
    outcome.record(
        "gateway database lost: orphans found, stopped after the grace, nothing protected",
        released.get("protected") == [] and found == stopped == expected
        and took <= ORPHAN_GRACE_SECONDS + 90,
        f"{found} found, {stopped} stopped, protection released {took:.0f}s after the new "
        f"gateway served (grace {ORPHAN_GRACE_SECONDS:g}s); " + json.dumps(released))


ROLLOUT_SECONDS = 900.0
"""How long the rehearsal follows a roll-out before it gives up."""


def _json_line(process: subprocess.Popen[str], timeout: float) -> dict:
    """The next JSON line ``process`` prints (within ``timeout``, else it is killed)."""
    assert process.stdout is not None
    watchdog = threading.Timer(timeout, process.kill)
    watchdog.start()
    other: list[str] = []
    try:
        for line in process.stdout:
            if line.startswith("{"):
                return json.loads(line)
            other.append(line)
    finally:
        watchdog.cancel()
    return {"ok": False, "error": "".join(other)[-2000:] or "no output"}


def _rollout(rehearsal: Rehearsal, *args: str) -> int:
    """``dask-platform rollout`` as an operator runs it (admin1, from the user's network,
    through the ALB), its progress shown as it comes; its exit status."""
    alb = rehearsal.topology.host("alb").address
    process = rehearsal.spawn_in("user", [
        "-m", "daskplatform.cli", "rollout", "--gateway", f"https://{alb}{SERVICE_PREFIX}",
        "--user", "admin1", "--timeout", f"{ROLLOUT_SECONDS:g}", *args],
        env={PASSWORD_ENV: PASSWORDS["admin1"]})
    assert process.stdout is not None
    watchdog = threading.Timer(ROLLOUT_SECONDS + 120, process.kill)
    watchdog.start()
    try:
        for line in process.stdout:
            say(f"  | {line.rstrip()}")
    finally:
        watchdog.cancel()
    return process.wait()


def _killed(rehearsal: Rehearsal, cluster: str, since: dict[str, int]) -> list[str]:
    """Agents' log lines (since ``since``) of a process of ``cluster`` that ended by
    itself or was killed: a process stopped on request ends 'stopped'."""
    found = []
    for host in rehearsal.topology.platform_hosts():
        if host.role != "gateway":
            log = rehearsal.services_log(host.name)[since.get(host.name, 0):]
            found += [f"{host.name}: {line}" for line in log.splitlines()
                      if cluster in line and (" ended: failed" in line or "SIGKILL" in line)]
    return found


def _disk_versions(rehearsal: Rehearsal) -> dict[str, str]:
    """What each platform host's disk records as installed (the stub's and a roll-out's
    VERSION_FILE)."""
    found = {}
    for host in rehearsal.topology.platform_hosts():
        path = rehearsal.workdir / "hosts" / host.name / str(VERSION_FILE).lstrip("/")
        found[host.name] = path.read_text().strip() if path.exists() else "none"
    return found


def roll_out(rehearsal: Rehearsal, outcome: Outcome) -> None:
    """A new runtime version published and rolled out while a user's computation runs:
    the scheduler host upgrades at once, the idle worker node too, the two the
    computation holds drain and are reported stuck after drainSeconds; the gateway
    upgrades itself last, while the computation still runs through its proxy. Then the
    user finishes and stops their cluster, and the drained nodes upgrade."""
    archive, version = rehearsal.build_release()
    published = _step(rehearsal, "aws", "publish", str(archive), version)
    outcome.record("roll-out: a new runtime version published as `pulumi up` does",
                   published["ok"], json.dumps(published))
    if not published["ok"]:
        return
    held = rehearsal.spawn_in("client", ["-m", "daskplatform.rehearsal.computation",
                                         str(rehearsal.plan_file)], stdin=True)
    started = _json_line(held, 300)
    if not started.get("started"):
        held.kill()
        outcome.record("roll-out: a user's computation to span it", False, json.dumps(started))
        return
    name = started["cluster"]
    say(f"demo: {name} computes ({len(started['pids']) - 1} workers); rolling out {version} "
        f"(drainSeconds {DRAIN_SECONDS:g})")
    marks = {h.name: len(rehearsal.services_log(h.name))
             for h in rehearsal.topology.platform_hosts()}
    began = time.monotonic()
    first = _rollout(rehearsal)
    gateway_after = time.monotonic() - began
    during = _step(rehearsal, "user", "versions")
    assert held.stdin is not None
    try:
        held.stdin.write("finish\n")
        held.stdin.flush()
    except BrokenPipeError:  # it ended early: its last line says why
        pass
    computed = _json_line(held, 600)
    held.wait(120)
    say(f"demo: the user finished ({computed.get('tasks')} tasks) and stopped {name}; "
        "following the roll-out to its end")
    last = _rollout(rehearsal, "--watch")
    after = _step(rehearsal, "user", "versions")
    killed = _killed(rehearsal, name, marks)
    outcome.record(
        "roll-out while a user computes: the gateway upgraded itself while the "
        "computation ran, and the client's connection to its scheduler stayed",
        during.get("gateway") == version and computed.get("same_stream") is True
        and computed.get("client_events") == ["add-client"],
        f"gateway on {during.get('gateway')} {gateway_after:.0f}s into the roll-out "
        f"(rollout exited {first}: {during.get('rollout', {}).get('counts')}); "
        + json.dumps({k: computed.get(k) for k in ("same_stream", "client_events",
                                                    "longest_wave_gap_seconds", "error")}))
    outcome.record(
        "roll-out while a user computes: the right result, no Dask process killed",
        computed.get("right_result") is True and computed.get("same_pids") is True
        and not killed,
        json.dumps({k: computed.get(k) for k in ("tasks", "seconds", "right_result",
                                                    "same_pids", "error")})
        + f"; killed or failed in the agents' logs: {killed or 'none'}")
    rollout = after.get("rollout") or {}
    nodes = after.get("nodes") or {}
    disks = _disk_versions(rehearsal)
    took = (f"{rollout['finished_at'] - rollout['started_at']:.0f}s"
            if rollout.get("finished_at") and rollout.get("started_at") else "unfinished")
    outcome.record(
        f"roll-out done: every host reports {version}",
        last == 0 and rollout.get("done") is True and after.get("gateway") == version
        and len(nodes) == 1 + len(rehearsal.topology.workers)
        and all(v == version for _, v in nodes.values())
        and set(disks.values()) == {version},
        f"roll-out time {took} (gateway upgraded at {gateway_after:.0f}s, nodes the "
        f"user held upgraded once it stopped); gateway {after.get('gateway')}, nodes "
        f"{json.dumps(nodes)}, on disk {json.dumps(disks)}")
