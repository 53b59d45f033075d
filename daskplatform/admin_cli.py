"""``dask-platform admin``: the platform as an admin sees it, and what an admin may do.

    dask-platform admin clusters            every cluster: owner, group, workers, cores,
                                            memory, age, idle time, nodes
    dask-platform admin stop CLUSTER        stop anyone's cluster
    dask-platform admin queue               what waits for room, in service order
    dask-platform admin nodes               nodes with their load
    dask-platform admin drain NODE          no new processes on NODE (running ones stay)
    dask-platform admin undrain NODE

Common options: ``--gateway URL`` (default ``$DASK_GATEWAY__ADDRESS``), ``--user NAME``
(password from ``$DASK_PLATFORM_PASSWORD``, or asked; without ``--user``, the notebook's
hub token), ``--json``. Members of the admins group only: anyone else gets the gateway's
403, which says so.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from daskplatform.status_cli import ADDRESS_ENV, StatusError, authorization, fetch

ADMIN = "/api/v1/admin"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def table(rows: list[list[str]], header: list[str]) -> str:
    """Columns as wide as their widest cell."""
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows)]
    return "\n".join("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths))
                     .rstrip() for row in [header, *rows]) + "\n"


def render(command: str, answer: dict[str, Any]) -> str:
    if command == "clusters":
        rows = [[c["name"], c["user"], c["group"], c["status"], str(c["workers"]),
                 f"{c['cores']:g}", f"{c['memory_gb']:g}", _duration(c["age_seconds"]),
                 _duration(c["idle_seconds"]), ",".join(c["nodes"])]
                for c in answer["clusters"]]
        return table(rows, ["CLUSTER", "USER", "GROUP", "STATUS", "WORKERS", "CORES", "GB",
                            "AGE", "IDLE", "NODES"]) if rows else "no clusters\n"
    if command == "queue":
        rows = [[w["role"], f"{w['place']}/{w['of']}", w["key"], w["user"],
                 str(w["priority"]), f"{w['cores']:g}", f"{w['memory_gb']:g}"]
                for w in answer["waiting"]]
        return table(rows, ["FOR", "PLACE", "REQUEST", "USER", "PRIORITY", "CORES", "GB"]) \
            if rows else "nothing waits\n"
    if command == "nodes":
        rows = [[n["node_id"], n["role"], f"{n['cores'] - n['free_cores']:g}/{n['cores']:g}",
                 f"{n['memory_gb'] - n['free_memory_gb']:.2f}/{n['memory_gb']:g}",
                 str(n["processes"]), ",".join(n["users"]) or "-",
                 "lost" if n["lost"] else "drained" if n["drained"]
                 else "draining" if n["draining"] else "ok"]
                for n in answer["nodes"]]
        return table(rows, ["NODE", "ROLE", "CORES USED", "GB USED", "PROCESSES", "USERS",
                            "STATE"])
    if command == "stop":
        return f"stopped cluster {answer['stopped']} of {answer['user']}\n"
    return f"node {answer['node']}: {'drained' if answer['drained'] else 'undrained'}\n"


def call(command: str, target: str | None, gateway: str, auth: str) -> dict[str, Any]:
    if command == "stop":
        return fetch(gateway, auth, path=f"{ADMIN}/clusters/{target}", method="DELETE")
    if command in ("drain", "undrain"):
        return fetch(gateway, auth, path=f"{ADMIN}/nodes/{target}/{command}", body={})
    return fetch(gateway, auth, path=f"{ADMIN}/{command}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="dask-platform admin", description=__doc__.split("\n\n")[0])
    p.add_argument("command", choices=("clusters", "stop", "queue", "nodes", "drain",
                                       "undrain"))
    p.add_argument("target", nargs="?", help="the cluster (stop) or node (drain, undrain)")
    p.add_argument("--gateway", default=os.environ.get(ADDRESS_ENV, "http://127.0.0.1:8000"))
    p.add_argument("--user", help="log in as this admin (password from "
                                   "$DASK_PLATFORM_PASSWORD)")
    p.add_argument("--json", action="store_true", help="the gateway's answer as JSON")
    args = p.parse_args(argv)
    if args.command in ("stop", "drain", "undrain") and not args.target:
        p.error(f"{args.command} needs the {'cluster' if args.command == 'stop' else 'node'}")
    try:
        answer = call(args.command, args.target, args.gateway, authorization(args.user))
    except StatusError as exc:
        print(f"dask-platform admin: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(json.dumps(answer, indent=1) + "\n" if args.json
                     else render(args.command, answer))
    return 0
