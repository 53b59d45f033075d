"""The agent's wire types (docs/node-agent-api.md): a Spawn request and a Process."""

from __future__ import annotations

import hashlib
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

Kind = Literal["scheduler", "worker"]
State = Literal["starting", "running", "stopped", "failed"]

_FILE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_PORT_PLACEHOLDER = re.compile(r"\{port(\d+)\}")
MAX_PORTS = 16


class SpawnError(ValueError):
    """A bad spawn request; the message names the field and what is allowed."""


class Spawn(BaseModel):
    """What to start. ``argv`` are the arguments of ``dask scheduler|worker``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,128}$")
    kind: Kind
    argv: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    files: dict[str, str] = Field(default_factory=dict)
    cores: float = Field(gt=0, le=1024)
    memory_gb: float = Field(gt=0, le=16384)
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("files")
    @classmethod
    def _plain_names(cls, files: dict[str, str]) -> dict[str, str]:
        bad = [name for name in files if not _FILE_NAME.match(name)]
        if bad:
            raise ValueError(f"file names {bad} must be plain names matching "
                             f"{_FILE_NAME.pattern} (no directories)")
        return files

    @field_validator("env")
    @classmethod
    def _env_names(cls, env: dict[str, str]) -> dict[str, str]:
        bad = [name for name in env if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name)]
        if bad:
            raise ValueError(f"environment names {bad} must match [A-Za-z_][A-Za-z0-9_]*")
        return env

    def port_count(self) -> int:
        """How many ports the ``{portN}`` placeholders in argv and env need."""
        texts = [*self.argv, *self.env.values()]
        indexes = [int(n) for text in texts for n in _PORT_PLACEHOLDER.findall(text)]
        return max(indexes) + 1 if indexes else 0

    def fingerprint(self) -> str:
        """Identifies the spec for idempotent retries without storing its secrets."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()

    @classmethod
    def parse(cls, data: object) -> Spawn:
        try:
            spawn = cls.model_validate(data)
        except ValidationError as exc:
            problems = [
                f"{'.'.join(str(p) for p in err['loc']) or 'body'}: "
                f"{err['msg'].removeprefix('Value error, ')}"
                for err in exc.errors()
            ]
            raise SpawnError("invalid spawn request: " + "; ".join(problems)) from None
        if spawn.port_count() > MAX_PORTS:
            raise SpawnError(f"invalid spawn request: argv/env: at most {MAX_PORTS} port "
                             f"placeholders {{port0}}..{{port{MAX_PORTS - 1}}} are allowed")
        return spawn


def fill_placeholders(text: str, host: str, ports: list[int]) -> str:
    """Substitute ``{host}`` and ``{portN}``; other braces are left alone."""
    text = text.replace("{host}", host)
    return _PORT_PLACEHOLDER.sub(lambda m: str(ports[int(m.group(1))]), text)
