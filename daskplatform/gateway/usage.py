"""Usage and cost per user, group and cluster, from the gateway's own events.

Each process the gateway places (scheduler, worker, notebook server) is an interval:
opened when its agent has started it, closed when the gateway stops it or finds it gone
from its node. Core-seconds and GB-seconds are exact sums over those intervals (no
sampling). The ledger is a SQLite file in the gateway's state directory (on the durable
state volume on AWS), so a restarted gateway keeps counting; intervals still open are
closed once their process is seen gone.

Cost: each interval is charged its share of the node it ran on, by the larger of its
share of the node's cores and of its memory (what it keeps others from using), at the
instance price in ``costs.instancePricesUsdPerHour``. Figures are estimates of what the
platform's nodes cost while used, not an AWS bill.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from daskplatform.settings import RuntimeSettings, node_capacity

BY = ("user", "group", "cluster")
SCHEMA = """
CREATE TABLE IF NOT EXISTS usage (
    process_id TEXT PRIMARY KEY, node TEXT NOT NULL,
    user TEXT NOT NULL, grp TEXT NOT NULL, cluster TEXT NOT NULL, kind TEXT NOT NULL,
    cores REAL NOT NULL, memory_gb REAL NOT NULL,
    started REAL NOT NULL, stopped REAL
);
CREATE TABLE IF NOT EXISTS alerts (grp TEXT, month TEXT, level INTEGER,
                                   PRIMARY KEY (grp, month, level));
"""


@dataclass(frozen=True)
class NodePrice:
    """What a node of one kind offers and costs: the unit a process is charged in."""

    cores: float
    memory_gb: float
    usd_per_hour: float


@dataclass(frozen=True)
class UsageRow:
    key: str
    """The user, group or cluster the row sums."""
    core_seconds: float
    gb_seconds: float
    cost_usd: float
    processes: int

    def to_dict(self) -> dict[str, float | int | str]:
        return {"key": self.key, "core_hours": round(self.core_seconds / 3600, 6),
                "gb_hours": round(self.gb_seconds / 3600, 6),
                "cost_usd": round(self.cost_usd, 6), "processes": self.processes}


def node_prices(settings: RuntimeSettings) -> dict[str, NodePrice]:
    """Process kind -> the node it runs on: schedulers on the scheduler host, workers and
    notebook servers on worker nodes (what a node offers after its reserve)."""
    prices = {}
    for kinds, host in ((("scheduler",), settings.scheduler),
                        (("worker", "notebook"), settings.workers)):
        cores, memory_gb = node_capacity(host, settings.clusters)
        price = NodePrice(cores, memory_gb, settings.costs.hourly(host.instance_type))
        prices.update(dict.fromkeys(kinds, price))
    return prices


def month_start(now: float) -> float:
    """The first instant of ``now``'s calendar month (UTC): budgets are monthly."""
    moment = datetime.fromtimestamp(now, UTC)
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp()


class UsageLedger:
    """The intervals, in SQLite (``path``; None keeps them in memory)."""

    def __init__(self, path: Path | None, prices: Mapping[str, NodePrice]) -> None:
        self._db = sqlite3.connect(str(path) if path else ":memory:",
                                   check_same_thread=False, isolation_level=None)
        if path is not None:
            path.chmod(0o600)
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()
        self.prices = dict(prices)
        """Process kind -> the node price it is charged at."""

    def start(self, process_id: str, node: str, user: str, group: str, cluster: str,
              kind: str, cores: float, memory_gb: float, at: float | None = None) -> None:
        """Open an interval (again the same id: nothing changes)."""
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO usage VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)",
                (process_id, node, user, group, cluster, kind, cores, memory_gb,
                 time.time() if at is None else at))

    def stop(self, process_id: str, at: float | None = None) -> bool:
        """Close an open interval; False if there was none."""
        with self._lock:
            done = self._db.execute(
                "UPDATE usage SET stopped = ? WHERE process_id = ? AND stopped IS NULL",
                (time.time() if at is None else at, process_id))
        return done.rowcount == 1

    def open_on(self, node: str, before: float | None = None) -> set[str]:
        """Processes on ``node`` whose interval is open (and began before ``before``)."""
        with self._lock:
            return {row[0] for row in self._db.execute(
                "SELECT process_id FROM usage WHERE stopped IS NULL AND node = ? "
                "AND started < ?", (node, time.time() if before is None else before))}

    def usage(self, since: float, until: float | None = None, by: str = "user",
              where: Mapping[str, str] | None = None) -> list[UsageRow]:
        """Sums over ``[since, until]`` (intervals clipped to it), grouped ``by`` user,
        group or cluster, optionally only rows matching ``where`` (column -> value)."""
        if by not in BY:
            raise ValueError(f"by: one of {', '.join(BY)}, got {by!r}")
        until = time.time() if until is None else until
        sums: dict[str, list[float]] = {}
        for row in self._rows(since, until, where or {}):
            user, group, cluster, kind, cores, memory_gb, seconds = row
            key = {"user": user, "group": group, "cluster": cluster}[by]
            total = sums.setdefault(key, [0.0, 0.0, 0.0, 0])
            total[0] += cores * seconds
            total[1] += memory_gb * seconds
            total[2] += self._cost(kind, cores, memory_gb, seconds)
            total[3] += 1
        return sorted((UsageRow(k, v[0], v[1], v[2], int(v[3])) for k, v in sums.items()),
                      key=lambda r: (-r.cost_usd, r.key))

    def cost(self, since: float, group: str, until: float | None = None) -> float:
        rows = self.usage(since, until, "group", {"grp": group})
        return rows[0].cost_usd if rows else 0.0

    def intervals(self, since: float, until: float) -> list[dict[str, object]]:
        """Every interval overlapping ``[since, until]``, clipped: the daily report."""
        with self._lock:
            rows = self._db.execute(
                "SELECT process_id, user, grp, cluster, kind, cores, memory_gb, "
                "MAX(started, ?), MIN(COALESCE(stopped, ?), ?) FROM usage "
                "WHERE started < ? AND COALESCE(stopped, ?) > ?",
                (since, until, until, until, until, since)).fetchall()
        return [{"process_id": r[0], "user": r[1], "group": r[2], "cluster": r[3],
                 "kind": r[4], "cores": r[5], "memory_gb": r[6], "start": r[7], "end": r[8],
                 "core_seconds": r[5] * (r[8] - r[7]), "gb_seconds": r[6] * (r[8] - r[7]),
                 "cost_usd": self._cost(r[4], r[5], r[6], r[8] - r[7])} for r in rows]

    def alerted(self, group: str, month: str, level: int) -> bool:
        """Record that ``group`` crossed ``level`` % in ``month``; True if it had already."""
        with self._lock:
            done = self._db.execute("INSERT OR IGNORE INTO alerts VALUES (?, ?, ?)",
                                    (group, month, level))
        return done.rowcount == 0

    def close(self) -> None:
        self._db.close()

    def _rows(self, since: float, until: float, where: Mapping[str, str]
              ) -> Iterable[tuple[str, str, str, str, float, float, float]]:
        columns = {"grp", "user", "cluster"}
        if not set(where) <= columns:
            raise ValueError(f"where: columns {sorted(columns)} only")
        filters = "".join(f" AND {column} = ?" for column in where)
        with self._lock:
            return self._db.execute(
                "SELECT user, grp, cluster, kind, cores, memory_gb, "
                "MIN(COALESCE(stopped, ?), ?) - MAX(started, ?) FROM usage "
                f"WHERE started < ? AND COALESCE(stopped, ?) > ?{filters}",
                (until, until, since, until, until, since, *where.values())).fetchall()

    def _cost(self, kind: str, cores: float, memory_gb: float, seconds: float) -> float:
        price = self.prices.get(kind)
        if price is None or seconds <= 0:
            return 0.0
        share = max(cores / price.cores, memory_gb / price.memory_gb)
        return share * price.usd_per_hour * seconds / 3600
