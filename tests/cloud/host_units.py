"""Read the systemd units and files a host's user data writes, the way the host would.

Agent hosts take their ExecStart from the packaged unit and its ``${ROLE}``/``${SETTINGS}``
from the environment file the stub writes, so tests rebuild the agent's command from both.
"""

from __future__ import annotations

import re
import shlex
from importlib.resources import files

from components.bootstrap import AGENT_ENV_FILE, AGENT_UNIT


def heredoc(text: str, path: str) -> str:
    """The body of ``cat > path <<'END' ... END`` in a script."""
    found = re.search(rf"^cat > {re.escape(path)} <<'(\w+)'\n(.*?)\n\1$", text,
                      re.MULTILINE | re.DOTALL)
    assert found, f"user data writes no {path}"
    return found.group(2)


def packaged_unit() -> str:
    """The agent unit as installed with the package (package data of daskplatform.node)."""
    return (files("daskplatform.node") / AGENT_UNIT).read_text()


def directives(unit: str) -> dict[str, list[str]]:
    """``Key=value`` lines of a unit (continuations joined, comments dropped), by key."""
    found: dict[str, list[str]] = {}
    for line in unit.replace("\\\n", " ").splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";")):
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(" ".join(value.split()))
    return found


def agent_environment(user_data: str) -> dict[str, str]:
    """The ``EnvironmentFile=`` an agent host's stub writes."""
    body = heredoc(user_data, AGENT_ENV_FILE)
    return dict(line.split("=", 1) for line in body.splitlines())


def agent_argv(user_data: str) -> list[str]:
    """``dask-platform`` arguments of the packaged unit, expanded with the host's env file
    (systemd's ``${NAME}`` expansion: one word per variable)."""
    environment = agent_environment(user_data)
    (exec_start,) = directives(packaged_unit())["ExecStart"]
    program, *argv = (re.sub(r"\$\{(\w+)\}", lambda m: environment[m.group(1)], word)
                      for word in shlex.split(exec_start))
    assert program.endswith("/dask-platform"), exec_start
    return argv
