"""``dask-platform rehearse``: the AWS stack's hosts on this machine, each in its own
network namespace, the stack's security groups enforced, each platform host booted by
the command its user data runs; ``--demo --once`` runs the scenario and exits 0 only
if every step held. Needs root (namespaces, veth pairs, nftables, mounts).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path
from types import FrameType

from daskplatform.identity.slapd import SlapdNotInstalled, _slapd_binary
from daskplatform.rehearsal import demo, netns
from daskplatform.rehearsal.orchestrator import Rehearsal, say
from daskplatform.settings import SettingsError
from daskplatform.user_access import closed_folders, explain

TOOLS = {"ip": "iproute2", "nft": "nftables", "unshare": "util-linux",
         "mount": "mount", "configurable-http-proxy": "node-configurable-http-proxy"}
"""Commands the rehearsal runs, and the Debian package of each."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dask-platform rehearse", description=__doc__)
    p.add_argument("--workers", type=int, default=3,
                   help="worker hosts dp-worker-1..N (default %(default)s)")
    p.add_argument("--stack", type=Path, default=Path("Pulumi.dev.yaml"),
                   help="stack settings file (default %(default)s)")
    p.add_argument("--demo", action="store_true", help="run the scenario once ready")
    p.add_argument("--once", action="store_true", help="exit after starting (and --demo)")
    p.add_argument("--state-dir", type=Path, default=None,
                   help="keep state and logs here (default: a temporary directory, removed)")
    return p


def check(args: argparse.Namespace) -> str | None:
    """A plain refusal before anything is created."""
    if os.geteuid() != 0:
        return ("needs root: it creates network namespaces, veth pairs, nftables tables and "
                "mounts; run `sudo ./dev rehearse` (CI runs as root)")
    missing = [f"{tool} (apt-get install {package})" for tool, package in TOOLS.items()
               if shutil.which(tool) is None]
    try:
        _slapd_binary()
    except SlapdNotInstalled:
        missing.append("slapd (apt-get install slapd ldap-utils)")
    if missing:
        return "missing: " + ", ".join(missing)
    closed = closed_folders()
    if closed:
        return explain(closed)
    if not 2 <= args.workers <= 8:
        return f"--workers must be between 2 and 8 (a cluster spans two hosts), got {args.workers}"
    if not args.stack.exists():
        return f"--stack {args.stack}: no such file; run from the repository root"
    if args.state_dir is not None and args.state_dir.exists() and any(args.state_dir.iterdir()):
        return f"--state-dir {args.state_dir} is not empty; give a new or empty directory"
    busy = [ns for ns in netns.existing_namespaces() if netns.namespace_pids(ns)]
    if busy:
        return (f"another rehearsal is running (namespaces {', '.join(busy)} have processes); "
                "stop it first (Ctrl-C, or SIGTERM to it)")
    return None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    problem = check(args)
    if problem:
        print(f"dask-platform rehearse: {problem}", file=sys.stderr)
        return 2
    stale = netns.existing_namespaces()
    if stale:
        say(f"removing namespaces left by an earlier run: {', '.join(stale)}")
        netns.destroy(stale)
    workdir = args.state_dir or Path(tempfile.mkdtemp(prefix="dask-platform-rehearsal-"))
    workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
    stop = threading.Event()

    def interrupt(signum: int, _: FrameType | None) -> None:
        raise KeyboardInterrupt  # while starting: unwind, then take everything down

    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    rehearsal: Rehearsal | None = None
    code = 0
    try:
        rehearsal = Rehearsal(args.stack, args.workers, workdir)
        rehearsal.start()
        for signum in previous:
            signal.signal(signum, lambda *_: stop.set())
        alb = rehearsal.topology.host("alb").address
        say(f"ready: https://{alb} (after {rehearsal.ready_after:.1f}s; CA "
            f"{rehearsal.plan.ca_file}; logs {workdir / 'logs'})")
        if args.demo and not stop.is_set():
            outcome = demo.run(rehearsal)
            say(f"demo: {'every step held' if outcome.ok else 'FAILED'}")
            code = 0 if outcome.ok else 1
        if not args.once:
            say("serving; Ctrl-C or SIGTERM takes everything down")
            while not stop.wait(1):
                dead = rehearsal.dead()
                if dead:
                    print(f"dask-platform rehearse: {dead[0]} exited; its log:\n"
                          f"{rehearsal.tail(dead[0])}", file=sys.stderr)
                    code = 1
                    break
    except KeyboardInterrupt:
        code = 130
    except (RuntimeError, SettingsError, OSError, netns.NetworkError) as exc:
        print(f"dask-platform rehearse: {exc}", file=sys.stderr)
        code = 1
    finally:
        for signum in previous:
            signal.signal(signum, signal.SIG_IGN)
        say("taking the rehearsal down ...")
        if rehearsal is not None:
            left = rehearsal.close()
        else:
            netns.destroy(netns.existing_namespaces())
            left = [f"namespace {ns}" for ns in netns.existing_namespaces()]
        if args.state_dir is None:
            shutil.rmtree(workdir, ignore_errors=True)
        if left:
            print(f"dask-platform rehearse: left behind: {', '.join(left)}", file=sys.stderr)
            code = code or 1
        else:
            say("down: no namespace, interface, process, nftables table or cgroup of it "
                "is left")
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return code
