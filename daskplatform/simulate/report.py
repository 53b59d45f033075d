"""The day's figures: waits per group, cost against always-max, utilisation, and the
issue's goal; as a markdown table and as JSON."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from daskplatform.settings import PLATFORM_GROUPS, PlatformSettings
from daskplatform.simulate.costs import Bill, bill
from daskplatform.simulate.gateway import Wait
from daskplatform.simulate.workday import Outcome
from daskplatform.simulate.workload import HOUR

GOAL_SAVINGS = 0.40
"""At least this much cheaper than the always-max pool, over the whole day..."""
GOAL_P95_WORKER_WAIT_S = 180.0
"""...with the 95th percentile of worker waits (all groups) under this."""
OFFICE_HOURS = (8 * HOUR, 18 * HOUR)
"""A stricter comparison: against a pool kept at its maximum only in office hours."""
ALL = "all"


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default); None for none."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True)
class WaitFigures:
    count: int
    unserved: int
    """Cancelled while waiting; counted with the time they waited (a lower bound)."""
    p50_s: float | None
    p95_s: float | None


def wait_figures(waits: Iterable[Wait]) -> WaitFigures:
    chosen = list(waits)
    seconds = [w.seconds for w in chosen]
    return WaitFigures(len(chosen), sum(not w.served for w in chosen),
                       percentile(seconds, 50), percentile(seconds, 95))


@dataclass(frozen=True)
class Summary:
    variant: str
    boot_seconds: float
    cluster_waits: dict[str, WaitFigures]
    worker_waits: dict[str, WaitFigures]
    day: Bill
    office_hours: Bill
    held_utilisation: float
    """Worker cores held by placed workers over worker cores provisioned (billed)."""
    busy_utilisation: float
    """Worker cores kept busy over worker cores provisioned."""
    peak_nodes: int
    capped_workers: int
    refused_clusters: int
    idle_stops: int
    busy_nodes_removed: int

    @property
    def goal_met(self) -> bool:
        return (self.day.savings >= GOAL_SAVINGS
                and (self.worker_waits[ALL].p95_s or 0.0) < GOAL_P95_WORKER_WAIT_S)


def summarise(variant: str, boot_seconds: float, outcome: Outcome,
              settings: PlatformSettings) -> Summary:
    def by_group(role: str) -> dict[str, WaitFigures]:
        waits = [w for w in outcome.waits if w.role == role]
        return {**{g: wait_figures(w for w in waits if w.group == g) for g in PLATFORM_GROUPS},
                ALL: wait_figures(waits)}

    provisioned = sum(n.billed_seconds(0, outcome.day_seconds) * n.capacity.cores
                      for n in outcome.nodes)
    return Summary(
        variant, boot_seconds, by_group("scheduler"), by_group("worker"),
        bill(settings, outcome.nodes, 0, outcome.day_seconds),
        bill(settings, outcome.nodes, *OFFICE_HOURS),
        outcome.held_core_seconds / provisioned, outcome.busy_core_seconds / provisioned,
        max(s.desired for s in outcome.samples), outcome.capped_workers,
        outcome.refused_clusters, outcome.idle_stops,
        sum(r.processes > 0 for r in outcome.removals))


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.0f} s" if seconds < 60 else f"{seconds / 60:.1f} min"


def _waits(figures: WaitFigures) -> str:
    return (f"{_duration(figures.p50_s)} / {_duration(figures.p95_s)} "
            f"(n={figures.count}, {figures.unserved} cancelled)")


def markdown(summaries: Sequence[Summary]) -> str:
    """One column per variant."""
    rows: list[tuple[str, list[str]]] = [
        ("node boot (launch to serving)", [f"{s.boot_seconds:.0f} s" for s in summaries])]
    for role, attribute in (("cluster", "cluster_waits"), ("worker", "worker_waits")):
        for group in (*PLATFORM_GROUPS, ALL):
            rows.append((f"{role} wait p50 / p95, {group}",
                         [_waits(getattr(s, attribute)[group]) for s in summaries]))
    office = f"{OFFICE_HOURS[0] / HOUR:02.0f}:00-{OFFICE_HOURS[1] / HOUR:02.0f}:00"
    rows += [
        ("worker node-hours (24 h)", [f"{s.day.worker_node_hours:.1f}" for s in summaries]),
        ("cost (24 h) vs always-max", [f"${s.day.total_usd:.2f} vs ${s.day.always_max_usd:.2f}"
                                       for s in summaries]),
        ("savings (24 h)", [f"{s.day.savings:.1%}" for s in summaries]),
        (f"savings, {office} only", [f"{s.office_hours.savings:.1%}" for s in summaries]),
        ("utilisation: cores held / busy", [f"{s.held_utilisation:.0%} / "
                                            f"{s.busy_utilisation:.0%}" for s in summaries]),
        ("peak nodes (desired)", [str(s.peak_nodes) for s in summaries]),
        ("workers capped (user's total)", [str(s.capped_workers) for s in summaries]),
        ("clusters refused (maxClusters)", [str(s.refused_clusters) for s in summaries]),
        ("clusters stopped by idle timeout", [str(s.idle_stops) for s in summaries]),
        ("busy nodes removed by scale-in", [str(s.busy_nodes_removed) for s in summaries]),
        (f"goal: >= {GOAL_SAVINGS:.0%} cheaper, p95 worker wait < "
         f"{GOAL_P95_WORKER_WAIT_S / 60:.0f} min",
         ["met" if s.goal_met else "missed" for s in summaries]),
    ]
    lines = ["| | " + " | ".join(s.variant for s in summaries) + " |",
             "|---|" + "---|" * len(summaries)]
    lines += [f"| {label} | " + " | ".join(cells) + " |" for label, cells in rows]
    return "\n".join(lines) + "\n"


def as_json(summaries: Sequence[Summary]) -> str:
    def one(summary: Summary) -> dict[str, Any]:
        bills = {name: {**asdict(b), "total_usd": b.total_usd, "savings": b.savings}
                 for name, b in (("day", summary.day), ("office_hours", summary.office_hours))}
        return {**asdict(summary), **bills, "goal_met": summary.goal_met}

    return json.dumps([one(s) for s in summaries], indent=2, allow_nan=False) + "\n"
