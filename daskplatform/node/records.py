"""What the agent knows about each process, and the state file that lets a restarted
agent re-adopt processes that kept running in their own sessions."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from daskplatform.node.spec import Kind, State

KEEP_ENDED = 256
"""Ended processes remembered (for the gateway's status checks), newest first."""


@dataclass
class Record:
    id: str
    kind: Kind
    cores: float
    memory_gb: float
    labels: dict[str, str]
    ports: list[int]
    fingerprint: str
    """sha256 of the spawn spec: retries with the same spec are idempotent."""
    pid: int | None = None
    start_ticks: int | None = None
    """Process start time from /proc, so a reused pid is never mistaken for ours."""
    state: State = "starting"
    exit_code: int | None = None
    started_at: float = field(default_factory=time.time)
    ended_at: float | None = None
    warm: bool = False
    stop_requested: bool = False

    @property
    def live(self) -> bool:
        return self.state in ("starting", "running")

    def public(self) -> dict[str, object]:
        """The ``Process`` object of the HTTP API."""
        return {
            "id": self.id, "kind": self.kind, "state": self.state, "pid": self.pid,
            "ports": self.ports, "cores": self.cores, "memory_gb": self.memory_gb,
            "labels": self.labels, "exit_code": self.exit_code,
            "started_at": self.started_at, "ended_at": self.ended_at, "warm": self.warm,
            "stopping": self.live and self.stop_requested,
        }


def start_ticks(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat (start time in clock ticks), None if gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            stat = fh.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def is_alive(record: Record) -> bool:
    return record.pid is not None and start_ticks(record.pid) == record.start_ticks


class StateFile:
    """``state.json`` in the agent's working directory, replaced atomically."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def load(self) -> list[Record]:
        try:
            data = json.loads(self._path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        return [Record(**item) for item in data["records"]]

    def save(self, records: list[Record]) -> None:
        ended = sorted((r for r in records if not r.live),
                       key=lambda r: r.ended_at or 0, reverse=True)
        kept = [r for r in records if r.live] + ended[:KEEP_ENDED]
        tmp = self._path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"records": [asdict(r) for r in kept]}, fh)
        os.replace(tmp, self._path)
