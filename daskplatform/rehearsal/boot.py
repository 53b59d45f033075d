"""Boot one platform host of the rehearsal the way EC2 boots it, in its namespace:

    ip netns exec dp-<host> unshare --mount --uts --propagation private \\
        python -m daskplatform.rehearsal.boot PLAN HOST

The host gets a disk of its own (``/etc``, ``/var`` and ``/opt`` are overlays whose
changes land in ``<workdir>/hosts/<host>``, so accounts, units, state and logs are the
host's alone and go with it), its EC2-style host name, the shared file system at
``/srv/homes`` and ``/srv/shared`` (a directory of the rehearsal standing in for EFS),
and the runtime where the user data stub installs it (``/opt/dask-platform/venv``, here
this machine's environment, since installing is what the rehearsal does not repeat).
It records what the stub records (the installed version, where installs come from) and
links the version's environment the way the stub does (``venvs/<version>``, ``venv``).
Then it runs exactly the ``host-setup`` command the host's user data ends with, in the
foreground (no systemd here), with two additions to the environment: where AWS is, and
that an install links this machine's environment rather than downloading packages.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from daskplatform.host.setup import STATE_MOUNT
from daskplatform.host.units import VENV, VENVS
from daskplatform.host.upgrade import INSTALL_MODE_ENV
from daskplatform.host.userdata import INSTALL_RECORD, HostBootstrap
from daskplatform.node.confine import cgroup_mounts
from daskplatform.rehearsal.plan import Plan
from daskplatform.rehearsal.topology import Host
from daskplatform.runtime_version import VERSION_FILE

OVERLAID = ("/etc", "/var", "/opt")
"""Each host's own disk: changes to these stay in the host's folder."""
EFS_MOUNTS = ("homes", "shared")


def host_name(host: Host) -> str:
    """EC2's resource name for an instance's private address (ip-10-0-32-20)."""
    return "ip-" + host.address.replace(".", "-")


def disk(plan: Plan, host: Host) -> Path:
    """The host's local disk: the upper layers of its overlays."""
    return Path(plan.workdir) / "hosts" / host.name


def efs(plan: Plan) -> Path:
    return Path(plan.workdir) / "efs"


def state_volume(plan: Plan) -> Path:
    """The gateway's state volume (an EBS volume in the stack): host-setup finds it
    mounted at the state directory, as it would after attaching it."""
    return Path(plan.workdir) / "volumes" / "gateway-state"


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True, text=True)


def machine_cgroup_mounts() -> list[tuple[str, str, str]]:
    """(mount point, type, options) of this machine's cgroup hierarchies, as its first
    process sees them (``ip netns exec`` gives a host a fresh /sys without them)."""
    return [(point, fstype, ",".join(sorted(options - {"rw", "ro"})))
            for point, fstype, options in cgroup_mounts("/proc/1/mountinfo")]


def prepare(plan: Plan, host: Host) -> None:
    """Mounts and host name, in this (private) mount and UTS namespace."""
    socket.sethostname(host_name(host))
    cgroups = machine_cgroup_mounts()
    if cgroups:  # the same hierarchies again, as every EC2 host has them
        _mount("-t", "tmpfs", "-o", "mode=0755", "cgroup", "/sys/fs/cgroup")
        for point, fstype, options in cgroups:
            Path(point).mkdir(parents=True, exist_ok=True)
            _mount("-t", fstype, *(["-o", options] if options else []), fstype, point)
    root = disk(plan, host)
    for path in OVERLAID:
        upper, work = root / path.strip("/"), root / f"{path.strip('/')}.work"
        upper.mkdir(parents=True, exist_ok=True)
        work.mkdir(parents=True, exist_ok=True)
        _mount("-t", "overlay", "overlay", "-o",
               f"lowerdir={path},upperdir={upper},workdir={work}", path)
    hosts = Path("/etc/hosts")
    entry = f"{host.address} {host_name(host)}\n"
    if entry not in hosts.read_text():  # the VPC's DNS resolves an instance's own name
        with hosts.open("a") as fh:
            fh.write(entry)
    if host.role == "gateway":  # the stack's state volume: it outlives the host's disk
        volume = state_volume(plan)
        volume.mkdir(mode=0o700, parents=True, exist_ok=True)
        Path(STATE_MOUNT).mkdir(mode=0o700, parents=True, exist_ok=True)
        _mount("--bind", str(volume), STATE_MOUNT)
    _mount("-t", "tmpfs", "-o", "mode=0755", "tmpfs", "/srv")
    for name in EFS_MOUNTS:
        shared = efs(plan) / name
        shared.mkdir(parents=True, exist_ok=True)
        Path("/srv", name).mkdir()
        _mount("--bind", str(shared), f"/srv/{name}")
    install_as_the_stub_does(plan.bootstrap(host))


def install_as_the_stub_does(bootstrap: HostBootstrap) -> None:
    """The stub's install, but for the packages: the version's environment is this
    machine's (a kept disk keeps what a roll-out installed since)."""
    if VERSION_FILE.exists():
        return
    versioned = Path(VENVS) / bootstrap.runtime_version
    versioned.parent.mkdir(parents=True, exist_ok=True)
    if not versioned.is_symlink():
        versioned.symlink_to(sys.prefix)
    Path(VENV).unlink(missing_ok=True)
    Path(VENV).symlink_to(versioned)
    Path(INSTALL_RECORD).write_text(bootstrap.install_record())
    VERSION_FILE.write_text(bootstrap.runtime_version + "\n")


def host_setup_command(bootstrap: HostBootstrap) -> list[str]:
    """The user data's last command, run in the foreground; it must be what the stub
    renders (the rehearsal boots hosts the way the stack does)."""
    argv = bootstrap.host_setup_argv()
    assert " ".join(argv) in bootstrap.render(), "the user data no longer ends in host-setup"
    return [*argv, "--foreground"]


def main(argv: list[str] | None = None) -> int:
    plan_path, name = (argv or sys.argv[1:])[:2]
    plan = Plan.load(plan_path)
    host = plan.topology.host(name)
    prepare(plan, host)
    command = host_setup_command(plan.bootstrap(host))
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
           "LANG": "C.UTF-8", "HOME": "/root", "AWS_ENDPOINT_URL": plan.aws_endpoint,
           INSTALL_MODE_ENV: "link"}
    print(f"boot: {host.namespace} ({host_name(host)}, {host.address}): {' '.join(command)}",
          flush=True)
    os.execve(command[0], command, env)
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main())
