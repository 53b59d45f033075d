"""``dask-platform status``: your clusters (an admin's: everyone's), what waits and why,
from the gateway's ``GET /api/v1/status``.

    dask-platform status [--gateway URL] [--user NAME] [--json]

Logs in as ``--user`` with the password in ``$DASK_PLATFORM_PASSWORD`` (asked for when
unset), or, with no ``--user``, with the JupyterHub token a notebook has
(``$JUPYTERHUB_API_TOKEN``). The gateway's address defaults to the one a notebook is
given (``$DASK_GATEWAY__ADDRESS``).
"""

from __future__ import annotations

import argparse
import base64
import getpass
import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any

PASSWORD_ENV = "DASK_PLATFORM_PASSWORD"
TOKEN_ENV = "JUPYTERHUB_API_TOKEN"
ADDRESS_ENV = "DASK_GATEWAY__ADDRESS"


class StatusError(RuntimeError):
    """What went wrong, said so the user can act on it."""


def authorization(user: str | None) -> str:
    if user:
        password = os.environ.get(PASSWORD_ENV) or getpass.getpass(f"password for {user}: ")
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    token = os.environ.get(TOKEN_ENV)
    if not token:
        raise StatusError(f"give --user NAME (password from ${PASSWORD_ENV} or asked), or run "
                          f"where ${TOKEN_ENV} is set (a notebook)")
    return f"jupyterhub {token}"


def fetch(gateway: str, auth: str, timeout: float = 30, path: str = "/api/v1/status",
          body: dict[str, Any] | None = None, method: str | None = None) -> dict[str, Any]:
    """GET ``path`` of the gateway's API (POST with ``body``, or ``method``), answered as
    JSON."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{gateway.rstrip('/')}{path}", data=data,
                                     method=method,
                                     headers={"Authorization": auth,
                                              "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        body = exc.read().decode(errors="replace")
        try:
            detail = json.loads(body).get("error", body)
        except ValueError:
            detail = body
        if exc.code in (401, 403):
            raise StatusError(f"the gateway refused the login ({exc.code}): {detail}") from None
        raise StatusError(f"the gateway answered {exc.code}: {detail}") from None
    except OSError as exc:
        raise StatusError(f"cannot reach the gateway at {gateway} ({exc}); is the address "
                          "right? (--gateway, or the hub URL plus /services/dask-gateway)"
                          ) from None


def render(status: dict[str, Any]) -> str:
    pool = status["pool"]
    lines = [f"{status['user']}{' (admin: every cluster)' if status['admin'] else ''}; pool: "
             f"{pool['worker_nodes']} worker node(s), {pool['waiting_clusters']} cluster(s) "
             f"and {pool['waiting_workers']} worker(s) waiting for room"]
    if not status["clusters"]:
        lines.append("no clusters")
    for cluster in status["clusters"]:
        workers = cluster["workers"]
        lines.append(f"{cluster['name']}  {cluster['user']} ({cluster['group']})  "
                     f"{cluster['status']}  workers: {workers['running']} running, "
                     f"{workers['starting']} starting, {workers['waiting']} waiting"
                     + (f"  (runtime {cluster['runtime_version']})"
                        if cluster.get("runtime_version") else ""))
        if cluster["waiting"]:
            lines.append(f"    {cluster['waiting']}")
    notebook = status.get("notebook")
    if notebook:
        where = f" on {notebook['node']}" if notebook.get("node") else ""
        lines.append(f"your notebook server: {notebook['status']}{where}"
                     + (f" ({notebook['message']})" if notebook.get("message") else ""))
    if "runtime" in status:
        lines += render_runtime(status["runtime"])
    return "\n".join(lines) + "\n"


def render_runtime(runtime: dict[str, Any]) -> list[str]:
    """Which runtime versions run where; mixed versions said plainly."""
    nodes = "; ".join(
        f"{version}: " + ", ".join(f"{n} {role}" for role, n in sorted(roles.items()))
        for version, roles in runtime["nodes"].items())
    lines = [f"runtime: gateway {runtime['gateway']}; nodes {nodes or 'none'}"]
    rollout = runtime.get("rollout")
    if runtime["mixed"]:
        lines.append("    MIXED VERSIONS: " + (
            f"a roll-out to {rollout['version']} is under way ({rollout['counts']})"
            if rollout and not rollout["done"] else
            "no roll-out is under way; an admin runs `dask-platform rollout`"))
    for node in runtime.get("node_list", []):
        lines.append(f"    {node['node_id']}  {node['role']}  {node['version']}  "
                     f"{node['processes']} process(es){'  draining' if node['draining'] else ''}")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="dask-platform status", description=__doc__.split("\n\n")[0])
    p.add_argument("--gateway", default=os.environ.get(ADDRESS_ENV, "http://127.0.0.1:8000"),
                   help=f"the gateway's URL (default ${ADDRESS_ENV}, else %(default)s)")
    p.add_argument("--user", help=f"log in as this user (password from ${PASSWORD_ENV})")
    p.add_argument("--json", action="store_true", help="the answer as JSON")
    args = p.parse_args(argv)
    try:
        status = fetch(args.gateway, authorization(args.user))
    except StatusError as exc:
        print(f"dask-platform status: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(json.dumps(status, indent=1) + "\n" if args.json else render(status))
    return 0
