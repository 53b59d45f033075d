"""Builds the rehearsal and takes it down: the plan (settings as the stack publishes
them, the private CA and its certificates, the topology), the network and its security
groups, then each host's process in its namespace, waiting for each to say it is ready.

Everything it starts runs inside the rehearsal's namespaces, so ``close`` finds it all
there: it stops every process in them, deletes them (their interfaces and nftables
tables go too), removes the cgroups the hosts' agents made and the state directory.
"""

from __future__ import annotations

import re
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from daskplatform.host.units import AGENT_UNIT, GATEWAY_UNIT, remove_cgroups
from daskplatform.identity.slapd import DEMO_BASE_DN, service_bind_dn, write_tls_files
from daskplatform.rehearsal import firewall, netns
from daskplatform.rehearsal.alb import TLS_FILES
from daskplatform.rehearsal.boot import disk, host_name, state_volume
from daskplatform.rehearsal.ipa_host import LDAPS_PORT
from daskplatform.rehearsal.plan import Plan
from daskplatform.rehearsal.topology import IPA_ADDRESS, Host, Topology, build_topology
from daskplatform.runtime_version import archive_files, source_version, write_archive
from daskplatform.settings import PlatformSettings, load_stack_file
from daskplatform.stack_names import StackNames
from daskplatform.tls import CertificateAuthority

READY_TIMEOUT = {"aws": 60.0, "ipa": 30.0, "alb": 30.0, "platform": 300.0}
"""Seconds each kind of host may take to say it is ready (platform hosts boot together
on this machine's cores)."""
READY_LINE = {"aws": r"^\S+ ready: ", "ipa": r"^ready: ", "alb": r"^ready: ",
              "platform": r" host-setup: ready$"}
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
ORPHAN_GRACE_SECONDS = 30.0
"""The rehearsal's timeouts.orphanGraceSeconds: long enough to see orphans wait, short
enough for the scenario."""
DRAIN_SECONDS = 20.0
"""The rehearsal's timeouts.drainSeconds: the roll-out reports the worker nodes a user's
computation holds as stuck soon, so the gateway upgrades itself while it still runs."""
RELEASE_NOTE = "daskplatform/rehearsal/RELEASE"
"""What the rehearsal's next runtime version adds to the package: its content hash (the
version) differs, the code does not."""


def say(message: str) -> None:
    print(f"rehearse: {message}", flush=True)


def rehearsal_settings(stack_file: Path, ca: CertificateAuthority) -> PlatformSettings:
    """The stack's settings with FreeIPA where the rehearsal puts it: LDAPS from the
    rehearsal's CA, trusted through ``ldapCaBundle`` as a real stack would set it."""
    settings = load_stack_file(str(stack_file))
    timeouts = settings.timeouts.model_copy(update={
        "orphan_grace_seconds": ORPHAN_GRACE_SECONDS, "drain_seconds": DRAIN_SECONDS})
    return PlatformSettings.model_validate({
        **dict(settings), "timeouts": timeouts,
        "ldap_url": f"ldaps://{IPA_ADDRESS}:{LDAPS_PORT}",
        "ldap_base_dn": DEMO_BASE_DN, "ldap_bind_dn": service_bind_dn(DEMO_BASE_DN),
        "ldap_ca_bundle": ca.pem})


@dataclass
class Started:
    host: Host
    process: subprocess.Popen[bytes]
    log: Path
    started_at: float


class Rehearsal:
    def __init__(self, stack_file: Path, workers: int, workdir: Path) -> None:
        self.workdir = workdir
        self.processes: dict[str, Started] = {}
        self.retired_counters: dict[str, int] = {}
        """nftables packet counts of replaced hosts' namespaces, by rule."""
        self.kinds: dict[str, str] = {}
        self.ready_after = 0.0
        ca = CertificateAuthority("dask-platform rehearsal CA")
        settings = rehearsal_settings(stack_file, ca)
        self.settings = settings
        topology = build_topology(settings, workers)
        names = StackNames("dask-platform", "rehearsal")
        version = source_version()
        ca_file = ca.write_certificate(workdir / "ca.crt")
        (workdir / "ipa" / "tls").mkdir(parents=True)
        write_tls_files(workdir / "ipa" / "tls", IPA_ADDRESS, ca)
        (workdir / "alb").mkdir()
        alb = topology.host("alb").address
        issued = ca.issue(workdir / "alb", "alb", [alb])
        assert (issued.certificate.name, issued.key.name) == TLS_FILES
        self.plan = Plan(
            topology=topology, region="eu-west-1",
            runtime_settings=settings.runtime(names.ldap_secret, runtime_version=version,
                                              **names.runtime_names()).to_json(),
            ldap_bind_password=secrets.token_urlsafe(16),
            instance_types={"gateway": settings.gateway.instance_type,
                            "scheduler": settings.scheduler.instance_type,
                            "worker": settings.workers.instance_type},
            tags={**settings.tags, "project": names.project, "stack": names.stack,
                  "managed-by": "pulumi"},
            worker_limits=(settings.workers.min, settings.workers.max),
            workdir=str(workdir), ca_file=str(ca_file), vpc_cidr=settings.vpc_cidr,
            runtime_version=version)
        self.plan_file = self.plan.save(workdir / "plan.json")
        (workdir / "logs").mkdir()

    @property
    def topology(self) -> Topology:
        return self.plan.topology

    # ------------------------------------------------------------------ start

    def start(self) -> None:
        started = time.monotonic()
        netns.create(self.topology)
        say(f"network: {len(self.topology.hosts)} hosts in namespaces "
            f"{', '.join(h.namespace for h in self.topology.hosts)}")
        enforced = 0
        for host in self.topology.hosts:
            if host.groups:
                firewall.apply(host.namespace, firewall.render(host, self.settings,
                                                               self.topology))
                enforced += 1
        say(f"security groups: nftables in {enforced} namespaces, default drop both ways")
        self._start("aws", ["-m", "daskplatform.rehearsal.aws_host"], "aws")
        self._start("ipa", ["-m", "daskplatform.rehearsal.ipa_host"], "ipa")
        for name in ("aws", "ipa"):
            self.wait_ready(name)
        for host in self.topology.platform_hosts():
            self._start(host.name, ["-m", "daskplatform.rehearsal.boot"], "platform",
                        host_args=[host.name],
                        wrap=["unshare", "--mount", "--uts", "--propagation", "private"])
        self._start("alb", ["-m", "daskplatform.rehearsal.alb"], "alb")
        for host in [*self.topology.platform_hosts(), self.topology.host("alb")]:
            self.wait_ready(host.name)
        self._alb_healthy()
        self.ready_after = time.monotonic() - started

    def replace_host(self, name: str, lose_state: bool = False) -> float:
        """Destroy platform host ``name`` (its namespace, every process in it and its
        local disk) and boot a fresh one at the same address (its own network interface
        in the stack) with the same state volume, or, with ``lose_state``, an empty one.
        Seconds until the new host and the ALB's health check say it serves."""
        started = self.processes.pop(name)
        host = started.host
        for rule, count in firewall.counters(host.namespace).items():  # go with it
            self.retired_counters[rule] = self.retired_counters.get(rule, 0) + count
        netns.destroy([host.namespace])
        started.process.wait(timeout=10)
        shutil.rmtree(disk(self.plan, host))
        if lose_state:
            shutil.rmtree(state_volume(self.plan))
        began = time.monotonic()
        started.log.rename(started.log.with_name(f"{name}-replaced-{int(began)}.log"))
        netns.create_host(host)
        firewall.apply(host.namespace, firewall.render(host, self.settings, self.topology))
        self._start(name, ["-m", "daskplatform.rehearsal.boot"], "platform",
                    host_args=[name],
                    wrap=["unshare", "--mount", "--uts", "--propagation", "private"])
        self.wait_ready(name)
        self._alb_healthy()
        return time.monotonic() - began

    def build_release(self) -> tuple[Path, str]:
        """The next runtime version, as a checkout with one change would build it: the
        archive the stack uploads (this package plus RELEASE_NOTE) and its version."""
        tree = self.workdir / "release"
        for name, path in archive_files().items():
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, tree / name)
        (tree / RELEASE_NOTE).write_text(f"rehearsal roll-out after {self.plan.runtime_version}\n")
        archive = self.workdir / "runtime-next.zip"
        return archive, write_archive(archive, tree)

    def _alb_healthy(self) -> None:
        alb = self.topology.host("alb")
        if self.run_in("user", ["-m", "daskplatform.rehearsal.probe", "http",
                                f"https://{alb.address}/hub/health", "--ca",
                                self.plan.ca_file, "--timeout", "60"]).returncode != 0:
            raise RuntimeError("the ALB never had a healthy target (the gateway host's "
                               "/hub/health) within 60 s; see the logs in "
                               f"{self.workdir / 'logs'}")

    def _start(self, name: str, argv: list[str], kind: str, host_args: list[str] = (),
               wrap: list[str] = ()) -> None:
        host = self.topology.host(name)
        log = self.workdir / "logs" / f"{name}.log"
        with open(log, "ab") as out:
            process = subprocess.Popen(
                ["ip", "netns", "exec", host.namespace, *wrap, sys.executable, *argv,
                 str(self.plan_file), *host_args],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=self.env(), start_new_session=True)
        self.processes[name] = Started(host, process, log, time.monotonic())
        self.kinds[name] = kind

    def env(self) -> dict[str, str]:
        return {"PATH": SYSTEM_PATH, "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1",
                "HOME": "/root", "SSL_CERT_FILE": self.plan.ca_file}

    def wait_ready(self, name: str) -> None:
        started, kind = self.processes[name], self.kinds[name]
        pattern = re.compile(READY_LINE[kind], re.MULTILINE)
        deadline = started.started_at + READY_TIMEOUT[kind]
        while not pattern.search(started.log.read_text(errors="replace")):
            if started.process.poll() is not None:
                raise RuntimeError(f"{started.host.namespace} exited during start; its "
                                   f"log ({started.log}):\n{self.tail(name)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{started.host.namespace} was not ready within "
                                   f"{READY_TIMEOUT[kind]:g}s; its log ({started.log}):\n"
                                   f"{self.tail(name)}")
            time.sleep(0.2)
        took = time.monotonic() - started.started_at
        say(f"host {started.host.namespace} up ({started.host.address}, {took:.1f}s)")

    def services_log(self, name: str) -> str:
        """The services' log on the host's own disk."""
        path = self.workdir / "hosts" / name / "var" / "log" / "dask-platform.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def tail(self, name: str, chars: int = 3000) -> str:
        text = self.processes[name].log.read_text(errors="replace")
        if self.kinds[name] == "platform":  # the services' own log, on the host's disk
            services = self.workdir / "hosts" / name / "var" / "log" / "dask-platform.log"
            if services.exists():
                text += f"\n--- {services}:\n" + services.read_text(errors="replace")
        return text[-chars:]

    def dead(self) -> list[str]:
        return [n for n, s in self.processes.items() if s.process.poll() is not None]

    def run_in(self, name: str, argv: list[str], timeout: float = 600
               ) -> subprocess.CompletedProcess[str]:
        """``python argv`` in ``name``'s namespace, to the end; its output captured."""
        return subprocess.run(["ip", "netns", "exec", self.topology.host(name).namespace,
                               sys.executable, *argv], capture_output=True, text=True,
                              timeout=timeout, env=self.env(), check=False)

    def spawn_in(self, name: str, argv: list[str], env: dict[str, str] | None = None,
                 stdin: bool = False) -> subprocess.Popen[str]:
        """``python argv`` in ``name``'s namespace, left running (stopped by close); with
        ``env`` added to the environment, and ``stdin`` a pipe to it."""
        return subprocess.Popen(["ip", "netns", "exec", self.topology.host(name).namespace,
                                 sys.executable, *argv], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True,
                                env={**self.env(), **(env or {})},
                                stdin=subprocess.PIPE if stdin else None,
                                start_new_session=True)

    # ------------------------------------------------------------------ stop

    def close(self) -> list[str]:
        """Take down processes, namespaces (with their interfaces and nftables tables)
        and the services' cgroups; returns what is left of them (nothing, normally)."""
        namespaces = [h.namespace for h in self.topology.hosts] + [netns.BRIDGE_NAMESPACE]
        netns.destroy([ns for ns in namespaces if ns in netns.existing_namespaces()])
        for started in self.processes.values():
            started.process.wait(timeout=10)
        left = [f"namespace {ns}" for ns in netns.existing_namespaces()]
        left += [f"process {name} ({s.process.pid})" for name, s in self.processes.items()
                 if s.process.poll() is None]
        for host in self.topology.platform_hosts():
            unit = GATEWAY_UNIT if host.role == "gateway" else AGENT_UNIT
            try:
                remove_cgroups(unit, host_name(host))
            except OSError as exc:
                left.append(f"cgroup of {unit} on {host.namespace} ({exc})")
        return left
