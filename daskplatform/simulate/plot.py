"""The day in one picture: nodes (desired, in service), running and queued workers, one
panel per variant. Drawn with matplotlib's object API (Agg), so no display is needed."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from matplotlib.figure import Figure

from daskplatform.simulate.workday import Outcome
from daskplatform.simulate.workload import HOUR


def plot(outcomes: Mapping[str, Outcome], maximum: int, path: Path) -> None:
    """``outcomes``: panel title -> the day; ``maximum``: ``workers.max``, drawn as a line."""
    figure = Figure(figsize=(11, 3.4 * len(outcomes)))
    axes = figure.subplots(len(outcomes), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (title, outcome) in zip(axes, outcomes.items()):
        hours = [s.at / HOUR for s in outcome.samples]
        for label, values in (
                ("nodes desired", [s.desired for s in outcome.samples]),
                ("nodes in service", [s.serving for s in outcome.samples]),
                ("workers running", [s.running_workers for s in outcome.samples]),
                ("workers queued", [s.queued_workers for s in outcome.samples])):
            ax.step(hours, values, where="post", label=label, linewidth=1.2)
        ax.axhline(maximum, linestyle=":", color="grey", label="workers.max (nodes)")
        ax.set_title(title, fontsize=10)
        ax.set_ylabel("count")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right", fontsize=8)
    axes[-1].set_xlabel("hour of the day")
    axes[-1].set_xlim(0, outcome.day_seconds / HOUR)
    axes[-1].set_xticks(range(0, int(outcome.day_seconds / HOUR) + 1, 2))
    figure.tight_layout()
    figure.savefig(path, dpi=100)
