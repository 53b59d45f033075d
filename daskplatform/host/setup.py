"""``dask-platform host-setup --role ROLE ...``: every boot step of a platform host after
the user data stub has installed the runtime, in order, each safe to run again:

1. settings: read the runtime settings (retrying while NAT routes and IAM settle);
2. mounts: EFS homes and shared data through their access points, one fstab line each
   (added once), mounted with retries unless already mounted;
   the gateway also mounts its state volume (``STATE_DEVICE``: databases, keys, cookie
   secret) at its state directory, made a file system on first use;
3. ca: FreeIPA's CA from the settings (``ldapCaBundle``) to ``/etc/dask-platform``, for
   admins' ``ldapsearch``; the runtime itself trusts the CA from the settings;
4. guard: on hosts that run users' code (scheduler, worker), nftables rules that keep
   users' uids away from instance metadata and the node agent (user_guard.py);
5. services: the role's units written and started (systemd), or run in the foreground
   where there is no systemd (``--foreground``: the rehearsal); the gateway host runs
   its proxy as a unit of its own, so gateway restarts keep clients' connections;
6. ready: each service answers its health check;
7. lifecycle: a worker completes the worker group's launch hook, so the group (and a
   ``pulumi up`` waiting for capacity) counts it only once it serves.

A failed step is reported with what to do and abandons a worker's launch so the group
replaces it; the stub's error trap counts it in the ``HostBootFailures`` metric.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from daskplatform.aws import aws_client
from daskplatform.host import user_guard
from daskplatform.host.units import (
    HOMES,
    STATE_ROOT,
    PROGRAM,
    SETUP_UNIT,
    UNIT_DIR,
    ForegroundService,
    PipelineWatch,
    Unit,
    agent_unit,
    gateway_unit,
    pipeline_unit,
    proxy_unit,
    setup_unit,
)
from daskplatform.host.upgrade import INSTALL_MODE_ENV
from daskplatform.host.userdata import BOOT_LOG
from daskplatform.node.imds import MetadataUnavailable, instance_identity
from daskplatform.runtime_config import load_runtime_settings
from daskplatform.settings import RuntimeSettings, SettingsError

ROLES = ("gateway", "scheduler", "worker")
ETC = Path("/etc/dask-platform")
CA_FILE = ETC / "ldap-ca.pem"
FSTAB = Path("/etc/fstab")
OPERATOR_PROFILE = Path("/etc/profile.d/dask-platform.sh")
MOUNT_POINTS = {"shared": "/srv/shared", "homes": HOMES}
"""EFS access point -> where every host mounts it."""
STATE_DEVICE = "/dev/sdf"
"""The gateway's state volume as the stack attaches it (Amazon Linux links the NVMe
device to this name)."""
STATE_LABEL = "dp-gw-state"
STATE_MOUNT = f"{STATE_ROOT}/dask-platform"
"""The gateway unit's StateDirectory: everything the gateway and JupyterHub keep."""
STATE_DEVICE_WAIT_SECONDS = 600.0
"""The volume is attached once the instance exists; a replacement waits for its
predecessor to stop and let go of it."""
PASSTHROUGH_ENV = ("AWS_ENDPOINT_URL", INSTALL_MODE_ENV)
"""Foreground services also get these from host-setup's environment: in the rehearsal,
where AWS is and that installs link this machine's environment. systemd services on AWS
never see them."""
SETTINGS_TRIES = 10
MOUNT_TRIES = 8
RETRY_WAIT_SECONDS = 5.0
"""The first wait between tries; each later one is longer (10 tries: about 4.5 minutes)."""
READY_SECONDS = 900.0
"""An agent serves only once the gateway has stored the agents' token, and the gateway
host boots in parallel: the worker group's launch hook waits as long."""

T = TypeVar("T")


class SetupFailed(RuntimeError):
    """A boot step failed; the message names the step and what to do."""


def say(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} host-setup: {message}", flush=True)


def retry(what: str, action: Callable[[], T], tries: int, wait: float,
          errors: tuple[type[BaseException], ...]) -> T:
    """``action()`` until it succeeds, ``tries`` times, waiting longer each time."""
    for attempt in range(1, tries + 1):
        try:
            return action()
        except errors as exc:
            if attempt == tries:
                raise SetupFailed(f"{what}: {exc}") from None
            say(f"{what}: attempt {attempt} failed ({exc}); retrying in {wait * attempt:g}s")
            time.sleep(wait * attempt)
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------- pure parts


def efs_fstab_line(file_system_id: str, access_point_id: str, mount_point: str) -> str:
    """An EFS mount through an access point, TLS and IAM (amazon-efs-utils)."""
    return (f"{file_system_id}:/ {mount_point} efs "
            f"_netdev,noresvport,tls,iam,accesspoint={access_point_id} 0 0")


def fstab_with(text: str, line: str) -> str:
    """``text`` with ``line`` as the only entry for its mount point (added once; an
    older entry for the same mount point is replaced, other entries are kept)."""
    mount_point = line.split()[1]
    kept = [old for old in text.splitlines()
            if old.split()[1:2] != [mount_point] or old.lstrip().startswith("#")]
    return "\n".join([*kept, line]) + "\n"


def is_mounted(mount_point: str, mountinfo: str) -> bool:
    """Whether ``mount_point`` is a mount point in ``/proc/self/mountinfo`` text."""
    escaped = mount_point.replace(" ", "\\040")
    return any(line.split()[4:5] == [escaped] for line in mountinfo.splitlines())


def units_for(args: argparse.Namespace, settings: RuntimeSettings) -> list[Unit]:
    if args.role == "gateway":  # the proxy first: the gateway's start is checked through it
        units = [proxy_unit(settings.ports),
                 gateway_unit(args.settings, args.region, settings.ports,
                              args.audit_bucket, args.alert_topic_arn)]
        if args.drop_queue_url:
            units.append(pipeline_unit(args.settings, args.region, settings.ports, PipelineWatch(
                args.drop_queue_url, args.raw_bucket, args.processed_bucket,
                args.audit_bucket, args.pipeline_password_secret, args.alert_topic_arn)))
        return units
    return [agent_unit(args.role, args.settings, args.region, settings.ports)]


def operator_profile(args: argparse.Namespace) -> str:
    """The environment of an admin's shell on the gateway host (Session Manager), so
    ``dask-platform users|admin|usage`` find this stack without flags."""
    values = {"DASK_PLATFORM_SETTINGS": args.settings, "AWS_DEFAULT_REGION": args.region,
              "DASK_PLATFORM_AUDIT_BUCKET": args.audit_bucket}
    return "".join(f"export {key}={shlex.quote(value)}\n"
                   for key, value in values.items() if value)


# ---------------------------------------------------------------------- steps


@dataclass
class HostSetup:
    args: argparse.Namespace
    settings: RuntimeSettings | None = None

    def run_steps(self) -> list[Unit]:
        self.settings = self.read_settings()
        self.mount_file_systems()
        if self.args.role == "gateway":
            self.mount_state_volume()
        self.install_ca()
        self.guard_user_traffic()
        if self.args.role == "gateway":
            self.write_operator_profile()
        return units_for(self.args, self.settings)

    def read_settings(self) -> RuntimeSettings:
        settings = retry(f"settings: cannot read {self.args.settings} (is the parameter "
                         "there and may this host's role read it?)",
                         lambda: load_runtime_settings(self.args.settings), SETTINGS_TRIES,
                         RETRY_WAIT_SECONDS, (BotoCoreError, ClientError, OSError))
        say(f"settings: read {self.args.settings} (stack {settings.stack_name or '-'})")
        return settings

    def mount_file_systems(self) -> None:
        access_points = {"shared": self.args.shared_access_point,
                         "homes": self.args.homes_access_point}
        for name, mount_point in MOUNT_POINTS.items():
            Path(mount_point).mkdir(parents=True, exist_ok=True)
            line = efs_fstab_line(self.args.file_system, access_points[name], mount_point)
            current = FSTAB.read_text() if FSTAB.exists() else ""
            wanted = fstab_with(current, line)
            if wanted != current:
                FSTAB.write_text(wanted)
            mountinfo = Path("/proc/self/mountinfo").read_text()
            if is_mounted(mount_point, mountinfo):
                say(f"mounts: {mount_point} already mounted")
                continue
            retry(f"mounts: cannot mount {mount_point} ({line.split()[0]}; are the EFS mount "
                  "targets up and does the efs security group admit this host on 2049?)",
                  lambda m=mount_point: _run(["mount", m]), MOUNT_TRIES, RETRY_WAIT_SECONDS,
                  (subprocess.CalledProcessError, OSError))
            say(f"mounts: {mount_point} mounted")

    def mount_state_volume(self) -> None:
        """The gateway's durable state: the volume at its state directory, a file system
        made only when it has none (a new stack), one fstab line."""
        Path(STATE_MOUNT).mkdir(mode=0o700, parents=True, exist_ok=True)
        if is_mounted(STATE_MOUNT, Path("/proc/self/mountinfo").read_text()):
            say(f"state: {STATE_MOUNT} already mounted")
            return
        deadline = time.monotonic() + STATE_DEVICE_WAIT_SECONDS
        while not Path(STATE_DEVICE).exists():
            if time.monotonic() > deadline:
                raise SetupFailed(f"state: {STATE_DEVICE} (the gateway's state volume) did "
                                  f"not appear within {STATE_DEVICE_WAIT_SECONDS:g}s; is it "
                                  "still attached to the instance this one replaces?")
            time.sleep(5)
        blank = subprocess.run(["blkid", STATE_DEVICE], capture_output=True).returncode != 0
        if blank:
            _run(["mkfs.xfs", "-q", "-L", STATE_LABEL, STATE_DEVICE])
            say(f"state: new file system on {STATE_DEVICE}")
        line = f"LABEL={STATE_LABEL} {STATE_MOUNT} xfs defaults,nofail 0 2"
        current = FSTAB.read_text() if FSTAB.exists() else ""
        wanted = fstab_with(current, line)
        if wanted != current:
            FSTAB.write_text(wanted)
        _run(["mount", STATE_MOUNT])
        say(f"state: {STATE_DEVICE} mounted at {STATE_MOUNT}"
            + (" (empty: a new stack)" if blank else " (the gateway's earlier state)"))

    def install_ca(self) -> None:
        assert self.settings is not None
        ETC.mkdir(mode=0o755, parents=True, exist_ok=True)
        if not self.settings.ldap_ca_bundle:
            CA_FILE.unlink(missing_ok=True)
            say("ca: the settings trust the system store for LDAP (ldapCaBundle: system)")
            return
        CA_FILE.write_text(self.settings.ldap_ca_bundle)
        CA_FILE.chmod(0o644)
        say(f"ca: FreeIPA's CA in {CA_FILE}")

    def write_operator_profile(self) -> None:
        OPERATOR_PROFILE.write_text(operator_profile(self.args))
        OPERATOR_PROFILE.chmod(0o644)
        say(f"operators: admin shells get this stack's settings from {OPERATOR_PROFILE}")

    def guard_user_traffic(self) -> None:
        assert self.settings is not None
        if self.args.role == "gateway":
            return  # no user code runs on the gateway host
        retry("guard: cannot load the nftables rules (is nftables installed?)",
              lambda: user_guard.install(self.settings.ports), 2, RETRY_WAIT_SECONDS,
              (subprocess.CalledProcessError, OSError))
        say(f"guard: users' uids cannot reach instance metadata or the node agent "
            f"(nftables table {user_guard.TABLE})")


def install_units(units: list[Unit], argv: list[str]) -> None:
    """Write each unit (only when it changed) and start it; a changed unit restarts.
    Also this very command, as a oneshot unit for later boots."""
    setup = Path(UNIT_DIR) / SETUP_UNIT
    setup.write_text(setup_unit([PROGRAM, "host-setup", *argv], BOOT_LOG))
    _run(["systemctl", "enable", SETUP_UNIT])
    changed = []
    for unit in units:
        path = Path(UNIT_DIR) / unit.name
        text = unit.render()
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            changed.append(unit.name)
    _run(["systemctl", "daemon-reload"])
    for unit in units:
        _run(["systemctl", "enable", "--now", unit.name])
        if unit.name in changed:
            _run(["systemctl", "restart", unit.name])
        say(f"services: {unit.name} enabled and started")


def wait_ready(units: list[Unit], tick: Callable[[], bool], timeout: float) -> None:
    """Until every unit answers its health check; ``tick`` runs between tries (the
    foreground supervisor restarts what exited) and returns False to give up."""
    deadline = time.monotonic() + timeout
    for unit in units:
        if not unit.health_url:  # nothing to ask (the pipeline watcher)
            continue
        while not _answers(unit.health_url):
            if not tick():
                raise SetupFailed(f"ready: stopped while waiting for {unit.name}")
            if time.monotonic() > deadline:
                raise SetupFailed(f"ready: {unit.name} did not answer {unit.health_url} "
                                  f"within {timeout:g}s; its log is /var/log/dask-platform.log "
                                  "on the host (the role's CloudWatch log group)")
            time.sleep(1)
        say(f"ready: {unit.name} answers {unit.health_url}")


def complete_launch(settings: RuntimeSettings, result: str) -> None:
    """Tell the worker group this instance's launch hook is done (CONTINUE or ABANDON)."""
    if not (settings.worker_asg_name and settings.worker_boot_hook):
        say("lifecycle: no worker launch hook in the settings; nothing to complete")
        return
    instance_id = instance_identity().instance_id
    try:
        aws_client("autoscaling").complete_lifecycle_action(
            AutoScalingGroupName=settings.worker_asg_name,
            LifecycleHookName=settings.worker_boot_hook, InstanceId=instance_id,
            LifecycleActionResult=result)
    except ClientError as exc:  # a plain reboot: no launch is waiting for this node
        if exc.response["Error"]["Code"] != "ValidationError":
            raise
        say(f"lifecycle: no launch of {instance_id} is waiting to complete "
            f"({exc.response['Error'].get('Message', '')})")
        return
    say(f"lifecycle: {result} for {instance_id} in {settings.worker_asg_name}")


def abandon_launch(args: argparse.Namespace, settings: RuntimeSettings | None) -> None:
    """Give up a worker's launch, so the group replaces it at once (the stub's error trap
    counts the failure in ``HostBootFailures`` for every role)."""
    if settings is None or args.role != "worker":
        return
    try:
        complete_launch(settings, "ABANDON")
    except (BotoCoreError, ClientError, MetadataUnavailable) as exc:
        say(f"lifecycle: could not abandon the launch ({exc}); the hook times out instead")


# ---------------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dask-platform host-setup",
                                description="Boot steps of a platform host after the "
                                            "runtime is installed (safe to run again).")
    p.add_argument("--role", required=True, choices=ROLES)
    p.add_argument("--settings", required=True, help="ssm://<parameter> (or a file)")
    p.add_argument("--region", required=True)
    p.add_argument("--file-system", required=True, help="EFS file system id")
    p.add_argument("--shared-access-point", required=True)
    p.add_argument("--homes-access-point", required=True)
    p.add_argument("--audit-bucket", default="",
                   help="the gateway's: usage reports and archived homes (default: none)")
    p.add_argument("--alert-topic-arn", default="",
                   help="the gateway's: SNS topic for budget alerts (default: none)")
    p.add_argument("--drop-queue-url", default="",
                   help="the gateway's: run the pipeline watcher on this queue (default: none)")
    p.add_argument("--raw-bucket", default="", help="the pipeline watcher's input bucket")
    p.add_argument("--processed-bucket", default="", help="the pipeline watcher's output")
    p.add_argument("--pipeline-password-secret", default="",
                   help="Secrets Manager id of the pipeline service account's password")
    p.add_argument("--foreground", action="store_true",
                   help="no systemd: run the role's services as children until SIGTERM "
                        "(the rehearsal)")
    return p


def _run(argv: list[str]) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _serve_foreground(units: list[Unit], settings: RuntimeSettings, role: str) -> int:
    """Run the services as systemd would until SIGTERM/SIGINT."""
    stop = threading.Event()

    def on_signal(signum: int, _: FrameType | None) -> None:
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    passthrough = {k: os.environ[k] for k in PASSTHROUGH_ENV if k in os.environ}
    services = [ForegroundService(unit, passthrough) for unit in units]
    try:
        for service in services:
            service.start()
            say(f"services: {service.unit.name} started (foreground)")
        def tick() -> bool:
            for service in services:
                service.supervise()
            return not stop.is_set()

        wait_ready(units, tick, READY_SECONDS)
        if role == "worker":
            complete_launch(settings, "CONTINUE")
        say("ready")
        while not stop.wait(1):
            tick()
    finally:
        for service in reversed(services):
            service.stop()
        say("stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    setup = HostSetup(args)
    try:
        units = setup.run_steps()
        assert setup.settings is not None
        if args.foreground:
            return _serve_foreground(units, setup.settings, args.role)
        install_units(units, sys.argv[1:] if argv is None else list(argv))
        wait_ready(units, lambda: True, READY_SECONDS)
        if args.role == "worker":
            complete_launch(setup.settings, "CONTINUE")
        say("ready")
        return 0
    except (SetupFailed, SettingsError, MetadataUnavailable, BotoCoreError, ClientError,
            subprocess.CalledProcessError, OSError) as exc:
        detail = exc.stderr.strip() if isinstance(exc, subprocess.CalledProcessError) else ""
        print(f"host-setup: failed: {exc}{': ' + detail if detail else ''}", file=sys.stderr,
              flush=True)
        abandon_launch(args, setup.settings)
        return 1

