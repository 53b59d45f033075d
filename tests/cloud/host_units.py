"""Read a host's boot the way the host runs it: the user data stub's last command is
``dask-platform host-setup``, whose arguments decide the services (units) it starts."""

from __future__ import annotations

import re
import shlex

from daskplatform.host import setup
from daskplatform.host.units import PROGRAM, Unit
from daskplatform.settings import RuntimeSettings


def heredoc(text: str, path: str) -> str:
    """The body of ``cat > path <<'END' ... END`` in a script."""
    found = re.search(rf"^cat > {re.escape(path)} <<'(\w+)'\n(.*?)\n\1$", text,
                      re.MULTILINE | re.DOTALL)
    assert found, f"user data writes no {path}"
    return found.group(2)


def host_setup_argv(user_data: str) -> list[str]:
    """The arguments of the stub's last command, which must be host-setup."""
    program, command, *argv = shlex.split(user_data.rstrip().splitlines()[-1])
    assert (program, command) == (PROGRAM, "host-setup"), user_data.splitlines()[-1]
    return argv


def host_units(user_data: str, settings: RuntimeSettings) -> list[Unit]:
    """The units host-setup starts on the host this user data boots."""
    args = setup._parser().parse_args(host_setup_argv(user_data))
    return setup.units_for(args, settings)


def directives(unit: str) -> dict[str, list[str]]:
    """``Key=value`` lines of a unit file, by key."""
    found: dict[str, list[str]] = {}
    for line in unit.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";")):
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value)
    return found
