"""``dask-platform rollout``: bring every host to the runtime version the stack last
published, without stopping anyone's work (admins), and show its progress.

    dask-platform rollout [--gateway URL] [--user NAME] [--version V] [--watch]
                          [--timeout SECONDS]

The gateway drives it (``daskplatform.gateway.rollout``): worker nodes on another
version take no new placements and upgrade in place once empty; the scheduler host
upgrades in place at once (its schedulers keep running, on their version); the gateway
upgrades last and comes back with its durable state. This command asks for it (or,
with ``--watch``, only follows the one under way) and prints each change until every
host runs the version, or until ``--timeout``; it exits 0 when done, 1 when a node is
stuck or failed (``--watch`` waits for stuck nodes), 2 on a refusal. The gateway's own
restart is waited out.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from daskplatform.status_cli import ADDRESS_ENV, PASSWORD_ENV, StatusError, authorization, fetch

POLL_SECONDS = 5.0
GATEWAY_RESTART_SECONDS = 300.0
"""How long the gateway may be unreachable (its own upgrade) before this gives up."""


def describe(report: dict[str, Any]) -> list[str]:
    """One line per host, as it stands."""
    lines = []
    for node_id, entry in sorted(report["nodes"].items()):
        line = f"  {node_id}  {entry['role']}  {entry['state']}  ({entry['from']} -> " \
               f"{report['version']}, now {entry.get('version', '?')})"
        if entry.get("holding") and entry["state"] in ("draining", "stuck"):
            line += f"  holding work of: {', '.join(entry['holding'])}"
        if entry.get("message") and entry["state"] == "failed":
            line += f"  {entry['message'][-300:]}"
        lines.append(line)
    gateway = report.get("gateway") or {}
    lines.append(f"  gateway  {gateway.get('state', 'waiting for the nodes')}"
                 + (f"  {gateway['message'][-300:]}" if gateway.get("state") == "failed"
                    else ""))
    return lines


def outcome(report: dict[str, Any], wait_stuck: bool = False) -> int | None:
    """0 done, 1 stuck or failed with nothing left to wait for, None while under way;
    with ``wait_stuck`` a stuck node is waited for (it upgrades once its users' clusters
    stop)."""
    if report["done"]:
        return 0
    states = {e["state"] for e in report["nodes"].values()}
    gateway = (report.get("gateway") or {}).get("state")
    settled = {"done", "failed"} if wait_stuck else {"done", "stuck", "failed"}
    if gateway == "failed" or (states <= settled and states & {"stuck", "failed"}
                               and gateway == "done"):
        return 1
    return None


def follow(gateway: str, auth: str, timeout: float, wait_stuck: bool = False) -> int:
    started = time.monotonic()
    last: list[str] = []
    unreachable_since: float | None = None
    while True:
        try:
            report = fetch(gateway, auth, path="/api/v1/rollout")
            unreachable_since = None
        except StatusError as exc:  # the gateway (or the hub before it) restarting
            if not str(exc).startswith(("cannot reach", "the gateway answered 50")):
                raise
            unreachable_since = unreachable_since or time.monotonic()
            if time.monotonic() - unreachable_since > GATEWAY_RESTART_SECONDS:
                raise
            time.sleep(POLL_SECONDS)
            continue
        lines = describe(report)
        if lines != last:
            print(f"[{report['elapsed_seconds']:7.1f}s] roll-out to {report['version']}: "
                  f"{report['counts']}", flush=True)
            for line in lines:
                if line not in last:
                    print(line, flush=True)
            last = lines
        result = outcome(report, wait_stuck)
        if result is not None:
            print("done: every host runs " + report["version"] if result == 0 else
                  "not done: see the hosts above (stuck nodes hold users' work; it is "
                  "never stopped: ask them to stop their clusters, or wait)", flush=True)
            return result
        if time.monotonic() - started > timeout:
            print(f"still under way after {timeout:g}s; `dask-platform rollout --watch` "
                  "follows it again", flush=True)
            return 1
        time.sleep(POLL_SECONDS)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="dask-platform rollout",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--gateway", default=os.environ.get(ADDRESS_ENV, "http://127.0.0.1:8000"),
                   help=f"the gateway's URL (default ${ADDRESS_ENV}, else %(default)s)")
    p.add_argument("--user", help=f"an admin's login (password from ${PASSWORD_ENV})")
    p.add_argument("--version", default=None,
                   help="the runtime version (default: the settings' runtimeVersion)")
    p.add_argument("--watch", action="store_true",
                   help="only follow the roll-out under way, waiting for stuck nodes too "
                        "(they upgrade once their users' clusters stop) until --timeout")
    p.add_argument("--timeout", type=float, default=3 * 3600,
                   help="stop following after this many seconds (default %(default)g)")
    args = p.parse_args(argv)
    try:
        auth = authorization(args.user)
        if not args.watch:
            body = {"version": args.version} if args.version else {}
            report = fetch(args.gateway, auth, path="/api/v1/rollout", body=body)
            print(f"roll-out to {report['version']} under way", flush=True)
        return follow(args.gateway, auth, args.timeout, wait_stuck=args.watch)
    except StatusError as exc:
        print(f"dask-platform rollout: {exc}", file=sys.stderr)
        return 2
