"""The platform's long-running services, declared once as :class:`Unit`: rendered as
systemd units on AWS hosts, and run in the foreground by ``host-setup --foreground``
where there is no systemd (the rehearsal), with the same command, environment, user,
state directory and log.

Foreground mode follows the directives the platform uses: ``User=`` (and the state
directory owned by it), ``StateDirectory=`` (``$STATE_DIRECTORY``), ``StandardOutput=
append:``, ``Restart=always`` with ``RestartSec=``, ``KillMode=`` (``process`` signals
only the main process, so Dask processes outlive an agent restart) and ``Delegate=yes``
(a cgroup of its own, named after the host and the unit, that the service's user may
write, as systemd hands one over). The agent's unit delegates nothing on systemd: its
Dask processes live in a delegated scope the agent makes (``confine.PROCESSES_SCOPE``),
so its own cgroup stays a leaf and restarts work on systemd 252; in foreground mode,
where only cgroup v1 is writable, it gets a delegated group of its own as a stand-in.
"""

from __future__ import annotations

import os
import pwd
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from daskplatform.settings import SERVICE_PREFIX, PortSettings

RUNTIME_ROOT = "/opt/dask-platform"
VENVS = f"{RUNTIME_ROOT}/venvs"
"""One environment per runtime version (``<VENVS>/<version>``): a process keeps the one
it started from, so an upgrade never changes the code under a running process."""
VENV = f"{RUNTIME_ROOT}/venv"
"""A link to the current version's environment; services start from it."""
PROGRAM = f"{VENV}/bin/dask-platform"
LOG_FILE = "/var/log/dask-platform.log"
"""Every service's output; the CloudWatch agent ships it from the first boot step."""
AUDIT_LOG = "/var/log/dask-platform-audit.log"
"""The gateway's audit trail (JSON lines), shipped to the gateway's log group."""
UNIT_DIR = "/etc/systemd/system"
STATE_ROOT = "/var/lib"
SYSTEMD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
"""The PATH systemd gives services."""
HOMES = "/srv/homes"
"""Users' homes on every host: the shared file system (EFS)."""
GATEWAY_UNIT = "dask-platform.service"
PROXY_UNIT = "dask-platform-proxy.service"
"""The gateway's proxy (scheduler TLS and the gateway's HTTP on 8786), apart from the
gateway so that a gateway restart keeps clients' connections (gateway/proxy.py)."""
GATEWAY_API_ADDRESS = "127.0.0.1:8785"
"""The gateway's private API on the gateway host, where its proxy finds it (loopback
only: no security group is involved)."""
AGENT_UNIT = "dask-platform-agent.service"
PIPELINE_UNIT = "dask-platform-pipeline.service"
"""The AppsFlyer pipeline watcher on the gateway host (``dask-platform pipeline watch``)."""
SETUP_UNIT = "dask-platform-setup.service"
"""host-setup again at every later boot (a node started from the warm pool completes
its launch hook this way; the user data ran only on the first boot)."""
CGROUP_V1 = Path("/sys/fs/cgroup")
DELEGATED_CONTROLLERS = ("cpu", "memory")


@dataclass(frozen=True)
class Unit:
    """One service: what systemd needs, and what foreground mode honours."""

    name: str
    description: str
    exec_start: tuple[str, ...]
    environment: Mapping[str, str]
    state_directory: str
    state_directory_mode: str = "0755"
    user: str | None = None
    kill_mode: str = "control-group"
    restart_seconds: float = 2
    stop_timeout_seconds: float = 90
    health_url: str = ""
    """Answers 200 once the service serves (host-setup waits for it)."""
    extra: tuple[tuple[str, str], ...] = field(default=())
    """Other [Service] directives (systemd only: hardening, limits)."""
    processes_scope: bool = False
    """Its Dask processes live in a delegated scope of their own, which the service makes
    (``confine.PROCESSES_SCOPE``); foreground mode delegates a v1 group instead."""
    wants: tuple[str, ...] = ()
    """Units started with it and before it; they keep running when it restarts."""

    def render(self) -> str:
        """The unit file systemd reads."""
        lines = ["[Unit]", f"Description={self.description}",
                 " ".join(["Wants=network-online.target", *self.wants]),
                 " ".join(["After=network-online.target remote-fs.target", *self.wants]),
                 "", "[Service]", "Type=simple"]
        if self.user:
            lines += [f"User={self.user}", f"Group={self.user}"]
        lines += [f"Environment={shlex.quote(f'{k}={v}')}"
                  for k, v in sorted(self.environment.items())]
        lines += [f"ExecStart={shlex.join(self.exec_start)}",
                  f"StateDirectory={self.state_directory}",
                  f"StateDirectoryMode={self.state_directory_mode}",
                  f"KillMode={self.kill_mode}", "Restart=always",
                  f"RestartSec={self.restart_seconds:g}",
                  f"TimeoutStopSec={self.stop_timeout_seconds:g}",
                  f"StandardOutput=append:{LOG_FILE}", "StandardError=inherit"]
        lines += [f"{key}={value}" for key, value in self.extra]
        lines += ["", "[Install]", "WantedBy=multi-user.target", ""]
        return "\n".join(lines)

    @property
    def delegates(self) -> bool:
        """Foreground mode gives it a cgroup of its own."""
        return ("Delegate", "yes") in self.extra or self.processes_scope


def setup_unit(host_setup_argv: list[str], boot_log: str) -> str:
    """The oneshot unit that runs ``host_setup_argv`` at boot, after the network."""
    return "\n".join([
        "[Unit]", "Description=dask-platform host setup (at every boot)",
        "Wants=network-online.target", "After=network-online.target", "",
        "[Service]", "Type=oneshot", "RemainAfterExit=yes",
        f"ExecStart={shlex.join(host_setup_argv)}",
        f"StandardOutput=append:{boot_log}", "StandardError=inherit", "",
        "[Install]", "WantedBy=multi-user.target", ""])


def proxy_unit(ports: PortSettings) -> Unit:
    """The gateway's proxy on the host's interfaces (8786: scheduler TLS for clients,
    and the gateway's API for schedulers, notebooks and the hub), routing to the gateway
    on GATEWAY_API_ADDRESS. Unprivileged in all but its uid: it reads its token from the
    gateway's state directory."""
    return Unit(
        name=PROXY_UNIT,
        description="dask-platform gateway proxy: clients' scheduler connections, kept "
                    "across gateway restarts",
        exec_start=(PROGRAM, "gateway-proxy", "--address", f"0.0.0.0:{ports.gateway_tls}",
                    "--gateway-address", GATEWAY_API_ADDRESS),
        environment={},
        state_directory="dask-platform",
        state_directory_mode="0700",
        # Through the proxy to the gateway: answers once both serve.
        health_url=f"http://127.0.0.1:{ports.gateway_tls}{SERVICE_PREFIX}/api/health",
        extra=(("CapabilityBoundingSet", ""), ("NoNewPrivileges", "yes"),
               ("ProtectSystem", "strict"), ("PrivateTmp", "yes")),
    )


def gateway_unit(settings_source: str, region: str, ports: PortSettings,
                 audit_bucket: str = "", alert_topic_arn: str = "") -> Unit:
    """JupyterHub in front on the ALB's port, the gateway's private API on
    GATEWAY_API_ADDRESS behind its proxy (its own unit, which the gateway's restarts
    leave running), and the hub's API for notebook servers, all on the host's interfaces
    (security groups decide who reaches them); schedulers and notebooks are told the
    host's private address from instance metadata. The audit trail goes to its own file
    (shipped to CloudWatch); usage reports and budget alerts go to the stack's audit
    bucket and alert topic."""
    return Unit(
        name=GATEWAY_UNIT,
        description="dask-platform gateway (JupyterHub + dask-gateway-server)",
        exec_start=(PROGRAM, "gateway", "--hub", "--settings", settings_source,
                    "--address", GATEWAY_API_ADDRESS, "--external-proxy",
                    "--proxy-address", f"0.0.0.0:{ports.gateway_http}",
                    "--proxy-tcp-address", f"0.0.0.0:{ports.gateway_tls}",
                    "--hub-api-port", str(ports.hub_api),
                    "--advertise-host", "imds", "--run-as-users", "--audit-log", AUDIT_LOG,
                    *(("--audit-bucket", audit_bucket) if audit_bucket else ()),
                    *(("--alert-topic-arn", alert_topic_arn) if alert_topic_arn else ())),
        environment={"AWS_DEFAULT_REGION": region},
        state_directory="dask-platform",
        state_directory_mode="0700",
        # JupyterHub (and its http proxy) and the gateway stop with it, not the gateway's
        # proxy (a unit of its own); the gateway stops in-memory clusters first, which can
        # take a while.
        stop_timeout_seconds=120,
        health_url=f"http://127.0.0.1:{ports.gateway_http}/hub/health",
        extra=(("Delegate", "yes"),),
        wants=(PROXY_UNIT,),
    )


@dataclass(frozen=True)
class PipelineWatch:
    """What the gateway host's pipeline watcher names: the stack's queue, buckets and the
    service account's password secret."""

    queue_url: str
    raw_bucket: str
    processed_bucket: str
    audit_bucket: str
    password_secret: str
    alert_topic_arn: str = ""


def pipeline_unit(settings_source: str, region: str, ports: PortSettings,
                  watch: PipelineWatch) -> Unit:
    """New drops processed on a gateway cluster as the service account, through the
    gateway on this host (its API behind the hub, its scheduler proxy); runs as the
    gateway does, its access being the host role's (docs/monitoring.md)."""
    return Unit(
        name=PIPELINE_UNIT,
        description="dask-platform AppsFlyer pipeline watcher (new raw drops)",
        exec_start=(PROGRAM, "pipeline", "watch", "--settings", settings_source,
                    "--queue-url", watch.queue_url, "--raw-bucket", watch.raw_bucket,
                    "--processed-bucket", watch.processed_bucket,
                    "--audit-bucket", watch.audit_bucket,
                    "--gateway-url", f"http://127.0.0.1:{ports.gateway_http}{SERVICE_PREFIX}",
                    "--proxy-address", f"gateway://127.0.0.1:{ports.gateway_tls}",
                    "--password-secret", watch.password_secret,
                    *(("--alert-topic-arn", watch.alert_topic_arn)
                      if watch.alert_topic_arn else ())),
        environment={"AWS_DEFAULT_REGION": region},
        state_directory="dask-platform-pipeline",
        state_directory_mode="0700",
        restart_seconds=30,  # a gateway still starting: try again in a while
        extra=(("NoNewPrivileges", "yes"), ("ProtectSystem", "full"), ("PrivateTmp", "yes")),
    )


AGENT_CAPABILITIES = ("CAP_SETUID", "CAP_SETGID", "CAP_CHOWN", "CAP_FOWNER",
                      "CAP_DAC_OVERRIDE", "CAP_KILL")
"""What the agent keeps of root: start each Dask process under its user's uid (set ids,
own its directories and files), reach and stop them. Nothing else."""


def agent_unit(role: str, settings_source: str, region: str, ports: PortSettings) -> Unit:
    """The node agent of a scheduler or worker host: root, bounded to what starting each
    user's processes under their own uid takes (AGENT_CAPABILITIES); homes on the shared
    file system; its Dask processes in a delegated scope of their own, never below the
    agent's cgroup (restarts work on systemd 252); KillMode=process so Dask processes
    outlive an agent restart (the next agent re-adopts them from its state file)."""
    return Unit(
        name=AGENT_UNIT,
        description=f"dask-platform node agent ({role}): starts and confines Dask processes",
        exec_start=(PROGRAM, "agent", "--role", role, "--settings", settings_source,
                    "--host", "0.0.0.0", "--advertise-host", "imds", "--homes", HOMES),
        environment={"AWS_DEFAULT_REGION": region},
        state_directory="dask-platform-agent",
        state_directory_mode="0711",
        kill_mode="process",
        health_url=f"http://127.0.0.1:{ports.node_agent}/v1/health",
        processes_scope=True,
        extra=(("CapabilityBoundingSet", " ".join(AGENT_CAPABILITIES)),
               ("NoNewPrivileges", "yes"), ("ProtectSystem", "full"), ("PrivateTmp", "yes"),
               ("LimitNOFILE", "65536")),
    )


class ForegroundService:
    """A unit run as systemd would, from a process that is not systemd (the rehearsal):
    restarted when it exits, stopped on :meth:`stop`."""

    def __init__(self, unit: Unit, passthrough: Mapping[str, str]) -> None:
        self.unit = unit
        self.passthrough = dict(passthrough)
        """Variables of the caller's environment the service also gets (in the rehearsal:
        where AWS is)."""
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self._next_start = 0.0

    def _account(self) -> pwd.struct_passwd | None:
        return pwd.getpwnam(self.unit.user) if self.unit.user else None

    def _state_directory(self, account: pwd.struct_passwd | None) -> Path:
        path = Path(STATE_ROOT) / self.unit.state_directory
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(int(self.unit.state_directory_mode, 8))
        if account is not None:
            os.chown(path, account.pw_uid, account.pw_gid)
        return path

    def start(self) -> None:
        account = self._account()
        state = self._state_directory(account)
        join = delegate_cgroups(self.unit, account) if self.unit.delegates else []
        env = {"PATH": SYSTEMD_PATH, "LANG": "C.UTF-8", **self.passthrough,
               **self.unit.environment, "STATE_DIRECTORY": str(state)}
        if account is not None:
            env.update(HOME=account.pw_dir, USER=account.pw_name, LOGNAME=account.pw_name)
        with open(LOG_FILE, "ab") as log:
            self.process = subprocess.Popen(
                list(self.unit.exec_start), env=env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, cwd="/", start_new_session=True,
                user=account.pw_uid if account else None,
                group=account.pw_gid if account else None,
                extra_groups=[] if account else None,
                preexec_fn=(lambda: _join(join)) if join else None)

    def supervise(self) -> None:
        """Restart=always: a service that exited starts again after RestartSec; what it
        left running goes first, unless KillMode=process leaves it be."""
        if self.process is None or self.process.poll() is None:
            return
        now = time.monotonic()
        if not self._next_start:
            if self.unit.kill_mode != "process":
                _kill(-self.process.pid, signal.SIGKILL)
            self._next_start = now + self.unit.restart_seconds
        elif now >= self._next_start:
            self._next_start = 0.0
            self.restarts += 1
            self.start()

    def stop(self) -> None:
        """SIGTERM (the main process only with KillMode=process, else its whole process
        group), SIGKILL after the stop timeout."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        target = process.pid if self.unit.kill_mode == "process" else -process.pid
        _kill(target, signal.SIGTERM)
        try:
            process.wait(self.unit.stop_timeout_seconds)
        except subprocess.TimeoutExpired:
            _kill(target, signal.SIGKILL)
            process.wait()


def foreground_cgroups(unit_name: str, host_name: str | None = None) -> list[Path]:
    """Where foreground ``Delegate=yes`` puts a unit in each writable cgroup v1
    hierarchy: below this process's own group, named after the host (this one by
    default) and the unit, since the rehearsal's hosts share this machine's cgroups."""
    with open("/proc/self/cgroup", encoding="utf-8") as fh:
        own = {ctrl: path for line in fh
               for _, ctrls, path in [line.rstrip("\n").split(":", 2)]
               for ctrl in ctrls.split(",")}
    name = f"{host_name or socket.gethostname()}-{unit_name}"
    return [CGROUP_V1 / ctrl / own[ctrl].lstrip("/") / name
            for ctrl in DELEGATED_CONTROLLERS
            if ctrl in own and (CGROUP_V1 / ctrl / "cgroup.procs").exists()]


def delegate_cgroups(unit: Unit, account: pwd.struct_passwd | None) -> list[Path]:
    """What ``Delegate=yes`` gives a service where only cgroup v1 is writable: a group
    of its own per controller, owned by the service's user; returns the ``cgroup.procs``
    files the service joins. None where they cannot be made: the agent then falls back
    to Dask's nanny limits, and says so."""
    procs = []
    for group in foreground_cgroups(unit.name):
        try:
            group.mkdir(exist_ok=True)
            if account is not None:
                for path in (group, group / "cgroup.procs", group / "tasks"):
                    os.chown(path, account.pw_uid, account.pw_gid)
        except OSError:
            return []
        procs.append(group / "cgroup.procs")
    return procs


def remove_cgroups(unit_name: str, host_name: str) -> None:
    """Delete what foreground ``Delegate=yes`` made for a unit on ``host_name``,
    innermost groups first (every process in them must have ended)."""
    for tree in foreground_cgroups(unit_name, host_name):
        if not tree.is_dir():
            continue
        for directory in sorted((d for d in tree.rglob("*") if d.is_dir()),
                                key=lambda d: len(d.parts), reverse=True):
            directory.rmdir()
        tree.rmdir()


def _join(procs: list[Path]) -> None:
    """In the service's child, before exec: move itself into its delegated groups."""
    for path in procs:
        with open(path, "w", encoding="ascii") as fh:
            fh.write("0")


def _kill(target: int, sig: signal.Signals) -> None:
    try:
        if target < 0:
            os.killpg(-target, sig)
        else:
            os.kill(target, sig)
    except ProcessLookupError:
        pass
