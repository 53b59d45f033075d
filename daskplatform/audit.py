"""The audit trail: one JSON line per event worth answering "who did what, when".

Logins (success and failure; never a password), clusters started, scaled and stopped,
notebook servers, admin actions and each step of a user's on- or offboarding. Every line
has ``at`` (ISO 8601, UTC), ``event`` and ``user`` (whom it is about), plus ``by`` when
someone else acted (an admin). On hosts the file is shipped to the platform's CloudWatch
log group (the stack saves an "activity by user" query over it); locally it is a file in
the state directory.

One process-wide trail, opened lazily from ``$DASK_PLATFORM_AUDIT_LOG`` (the gateway's
command line sets it): the authenticator and the backend, built separately by
dask-gateway, write to the same file. Without the variable nothing is written.
"""

from __future__ import annotations

import json
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

AUDIT_LOG_ENV = "DASK_PLATFORM_AUDIT_LOG"
SECRET_FIELDS = frozenset({"password", "token", "secret", "authorization"})
"""Never written, whatever a caller passes: the trail must not become a leak."""


class AuditTrail:
    """Appends events to one file, a line each, safe across threads."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()

    def record(self, event: str, user: str, **fields: Any) -> dict[str, Any]:
        """Write one event; returns the line's content (tests and callers may show it)."""
        line = {"at": datetime.now(UTC).isoformat(timespec="milliseconds"), "event": event,
                "user": user,
                **{k: v for k, v in fields.items() if k.lower() not in SECRET_FIELDS}}
        if self.path is not None:
            text = json.dumps(line, default=str, sort_keys=False) + "\n"
            with self._lock:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                with os.fdopen(fd, "a", encoding="utf-8") as fh:
                    fh.write(text)
        return line


_trail: AuditTrail | None = None


def trail() -> AuditTrail:
    """This process's trail (the file named by ``$DASK_PLATFORM_AUDIT_LOG``, if any)."""
    global _trail
    if _trail is None:
        path = os.environ.get(AUDIT_LOG_ENV)
        _trail = AuditTrail(Path(path) if path else None)
    return _trail


def read(path: Path) -> list[dict[str, Any]]:
    """Every event in ``path`` (tests, ``dask-platform admin audit``)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()]
