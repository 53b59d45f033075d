"""Identifiers that become path components: process ids (directories, logs, cgroups and
agent URLs), cluster and worker names (parts of process ids), node ids (state and
cgroup directories). One rule, checked before a path is built from them, so ``.``,
``..``, a slash or an option-like ``-x`` can never name a file."""

from __future__ import annotations

import re
from typing import TypeGuard

from daskplatform.shown import shown

SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
USERNAME = re.compile(r"[a-z_][a-z0-9_.-]{0,63}")
"""FreeIPA's login name rule: also a safe path component (a user's home)."""
SAFE_NAME_RULE = "1 to 128 of A-Z a-z 0-9 _ . -, starting with a letter, digit or _"


class UnsafeName(ValueError):
    """An identifier that cannot be a single, plain path component."""


def is_safe_name(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and SAFE_NAME.fullmatch(value) is not None


def safe_name(value: object, field: str) -> str:
    """``value`` itself when it is a safe path component, else UnsafeName naming ``field``."""
    if is_safe_name(value):
        return value
    raise UnsafeName(f"{field}: must be {SAFE_NAME_RULE}, got {shown(value)}")
