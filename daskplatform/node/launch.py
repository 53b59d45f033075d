"""The start of every Dask process the agent runs, warm (in a child forked from the
fork server) or cold (``python -m daskplatform.node.launch <spec.json>``).

Order matters: own session, join the cgroups, then the working directory, log file
and environment, and only then the heavy part (dask's CLI). Cold starts import dask
here, after confinement; warm children already have it imported and refresh dask's
config from the new environment instead.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
from typing import Any

CLI_MODULES = {
    "scheduler": ("distributed.cli.dask_scheduler", "dask scheduler"),
    "worker": ("distributed.cli.dask_worker", "dask worker"),
}
"""Spawn kind -> the click command distributed ships for it."""
WARM_KINDS = frozenset(CLI_MODULES)
"""Kinds the fork server (dask imported) may start. A notebook starts cold: JupyterLab
owes nothing to the fork server's imports, and gets an interpreter of its own."""


def enter(spec: dict[str, Any]) -> None:
    """Everything before the Dask code: session, cgroups, stdio, the user's uid (after
    what needs the agent's rights: the cgroups and the agent's log folder), cwd,
    environment."""
    if os.getsid(0) != os.getpid():
        os.setsid()
    for procs_file in spec["procs_files"]:
        with open(procs_file, "w", encoding="ascii") as fh:
            fh.write(str(os.getpid()))
    log_fd = os.open(spec["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    null_fd = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null_fd, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    os.close(null_fd)
    if spec.get("uid") is not None:  # for good: no way back to the agent's rights
        os.setgroups([spec["gid"]])
        os.setgid(spec["gid"])
        os.setuid(spec["uid"])
        os.umask(0o077)
    os.chdir(spec["cwd"])
    os.environ.clear()
    os.environ.update(spec["env"])


def run_notebook(argv: list[str]) -> int:
    """Run ``jupyterhub-singleuser argv`` (JupyterLab) in this process; its exit code."""
    from jupyterhub.singleuser import main

    sys.argv = ["jupyterhub-singleuser", *argv]
    try:
        main()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


def run_cli(kind: str, argv: list[str]) -> int:
    """Run ``dask scheduler|worker argv`` in this process; its exit code."""
    if kind == "notebook":
        return run_notebook(argv)
    import dask

    # dask read DASK_* at import (in the fork server); re-read them from our env.
    dask.config.refresh()
    for name, level in dask.config.get("logging", {}).items():
        if isinstance(level, str):
            logging.getLogger(name).setLevel(level.upper())
    module_name, prog = CLI_MODULES[kind]
    command = importlib.import_module(module_name).main
    sys.argv = [prog, *argv]
    try:
        command.main(args=argv, prog_name=prog, standalone_mode=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


def run(spec: dict[str, Any]) -> int:
    enter(spec)
    try:
        return run_cli(spec["kind"], spec["argv"])
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as fh:
        spec = json.load(fh)
    sys.exit(run(spec))


if __name__ == "__main__":
    main()
