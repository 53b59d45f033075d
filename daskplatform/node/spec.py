"""The agent's wire types (docs/node-agent-api.md): a Spawn request and a Process."""

from __future__ import annotations

import hashlib
import re
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    field_validator,
    model_validator,
)

from daskplatform.http_input import Text, problems
from daskplatform.identifiers import SAFE_NAME, SAFE_NAME_RULE, USERNAME, is_safe_name
from daskplatform.shown import shown

Kind = Literal["scheduler", "worker", "notebook"]
"""Dask's two, and a user's JupyterLab server (worker nodes only)."""
State = Literal["starting", "running", "stopped", "failed"]

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PORT_PLACEHOLDER = re.compile(r"\{port(\d+)\}")
MAX_PORTS = 16
MIN_USER_UID = 1000
"""The lowest uid a user's process may run under: below are root and system accounts
(the platform's services); host/user_guard.py fences off what uids from here may reach."""

Size = Annotated[float, Strict()]
"""A JSON number; true and false are not sizes."""


class SpawnError(ValueError):
    """A bad spawn request; the message names the field and what is allowed."""


class RunAs(BaseModel):
    """The user a process runs as: their login name (their home's name), uid and gid."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=f"^{USERNAME.pattern}$",
                      description="a FreeIPA login name: a-z 0-9 _ . -, starting with a "
                                  "letter or _")
    uid: Annotated[int, Strict()] = Field(ge=1, le=2**31 - 2,
                                          description="an integer from 1 to 2147483646")
    gid: Annotated[int, Strict()] = Field(ge=1, le=2**31 - 2,
                                          description="an integer from 1 to 2147483646")


class Spawn(BaseModel):
    """What to start. ``argv`` are the arguments of ``dask scheduler|worker`` or of
    ``jupyterhub-singleuser`` (kind notebook)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    id: str = Field(pattern=f"^{SAFE_NAME.pattern}$", description=SAFE_NAME_RULE)
    kind: Kind = Field(description="scheduler, worker or notebook")
    argv: list[Text] = Field(default_factory=list,
                             description="a list of strings without NUL characters")
    env: dict[str, Text] = Field(default_factory=dict,
                                 description="an object of variable names to strings")
    files: dict[str, Text] = Field(default_factory=dict,
                                   description="an object of plain file names to text")
    cores: Size = Field(gt=0, le=1024, description="a number above 0, at most 1024")
    memory_gb: Size = Field(gt=0, le=16384, description="a number above 0, at most 16384")
    cpu_limit: Size | None = Field(None, gt=0, le=1024,
                                   description="a number above 0, at most 1024, or null")
    """Cores the process may burst to (its cgroup's cap); default ``cores``. The node's
    room counts ``cores`` only: schedulers reserve little and burst when busy."""
    memory_limit_gb: Size | None = Field(None, gt=0, le=16384,
                                         description="a number above 0, at most 16384, or null")
    """The process's hard memory limit; default ``memory_gb``."""
    run_as: RunAs | None = None
    """Run the process under this user's uid and gid, with their home; default: the
    agent's own (local mode without root)."""
    labels: dict[Text, Text] = Field(default_factory=dict,
                                     description="an object of strings to strings")

    @model_validator(mode="after")
    def _limits_hold_the_reservation(self) -> Spawn:
        for limit, reserved, name in ((self.cpu_limit, self.cores, "cpu_limit"),
                                      (self.memory_limit_gb, self.memory_gb, "memory_limit_gb")):
            if limit is not None and limit < reserved:
                raise ValueError(f"{name}: must be at least the reservation ({reserved:g}), "
                                 f"got {limit:g}")
        return self

    @property
    def cgroup_limits(self) -> tuple[float, float]:
        """(cores, GB) the process is confined to."""
        return self.cpu_limit or self.cores, self.memory_limit_gb or self.memory_gb

    @field_validator("files")
    @classmethod
    def _plain_names(cls, files: dict[str, str]) -> dict[str, str]:
        bad = [name for name in files if not is_safe_name(name)]
        if bad:
            raise ValueError(f"file names {shown(bad)} must be plain names: {SAFE_NAME_RULE}")
        return files

    @field_validator("env")
    @classmethod
    def _env_names(cls, env: dict[str, str]) -> dict[str, str]:
        bad = [name for name in env if not _ENV_NAME.fullmatch(name)]
        if bad:
            raise ValueError(f"environment names {shown(bad)} must match {_ENV_NAME.pattern}")
        return env

    def port_count(self) -> int:
        """How many ports the ``{portN}`` placeholders in argv and env need."""
        texts = [*self.argv, *self.env.values()]
        # An index of thousands of digits would make int() raise; any long one is too many.
        indexes = [int(n) if len(n) <= 6 else MAX_PORTS
                   for text in texts for n in _PORT_PLACEHOLDER.findall(text)]
        return max(indexes) + 1 if indexes else 0

    def fingerprint(self) -> str:
        """Identifies the spec for idempotent retries without storing its secrets."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()

    @classmethod
    def parse(cls, data: object) -> Spawn:
        try:
            spawn = cls.model_validate(data)
        except ValidationError as exc:
            raise SpawnError("invalid spawn request: " + problems(exc, cls)) from None
        if spawn.port_count() > MAX_PORTS:
            raise SpawnError(f"invalid spawn request: argv/env: at most {MAX_PORTS} port "
                             f"placeholders {{port0}}..{{port{MAX_PORTS - 1}}} are allowed")
        return spawn


def fill_placeholders(text: str, host: str, ports: list[int]) -> str:
    """Substitute ``{host}`` and ``{portN}``; other braces are left alone."""
    text = text.replace("{host}", host)
    return _PORT_PLACEHOLDER.sub(lambda m: str(ports[int(m.group(1))]), text)
