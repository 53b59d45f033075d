"""The ``dask-platform`` command: one entry point, a subcommand per runtime job.

Each subcommand lives in its own module and exposes ``main(argv) -> int``; it is
imported only when chosen, so a worker host never imports JupyterHub.
"""

from __future__ import annotations

import importlib
import sys

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "local": ("daskplatform.local", "the whole platform on this machine"),
    "agent": ("daskplatform.node.agent", "the node agent of a scheduler/worker host"),
    "gateway": ("daskplatform.gateway.server", "dask-gateway-server with the pool backend"),
    "gateway-proxy": ("daskplatform.gateway.proxy",
                      "the gateway's proxy as a service of its own (gateway host)"),
    "pipeline": ("daskplatform.appsflyer.cli", "the AppsFlyer event pipeline"),
    "status": ("daskplatform.status_cli", "your clusters, what waits and why"),
    "credentials": ("daskplatform.credentials_cli",
                    "AWS credentials for your group's data (credential_process)"),
    "usage": ("daskplatform.usage_cli", "core-hours and cost per user, group or cluster"),
    "admin": ("daskplatform.admin_cli",
              "every cluster, the queue, nodes; stop, drain (admins)"),
    "users": ("daskplatform.users_cli", "on- and offboard users (admins)"),
    "host-setup": ("daskplatform.host.setup", "boot steps of a platform host (user data)"),
    "host-upgrade": ("daskplatform.host.upgrade",
                     "install another runtime version on this host (a roll-out)"),
    "rollout": ("daskplatform.rollout_cli",
                "bring every host to the published runtime version (admins)"),
    "rehearse": ("daskplatform.rehearsal.cli",
                 "the AWS stack's hosts in network namespaces on this machine (root)"),
    "simulate": ("daskplatform.simulate.cli",
                 "a team's workday on the platform, simulated (docs/workday.md)"),
}


def _usage() -> str:
    rows = "\n".join(f"  {name:<12} {help_}" for name, (_, help_) in SUBCOMMANDS.items())
    return f"usage: dask-platform <command> [options]\n\ncommands:\n{rows}\n"


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        sys.stdout.write(_usage())
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command not in SUBCOMMANDS:
        sys.stderr.write(f"dask-platform: unknown command {command!r}\n\n{_usage()}")
        return 2
    module = importlib.import_module(SUBCOMMANDS[command][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
