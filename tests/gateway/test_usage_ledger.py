"""The usage ledger with scripted times: exact sums, clipping to a window, the cost by the
larger of a process's core and memory share, and a restart that keeps counting."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from daskplatform.gateway.usage import NodePrice, UsageLedger, month_start, node_prices
from daskplatform.settings import RuntimeSettings

NODE = NodePrice(cores=2, memory_gb=4, usd_per_hour=0.2)
T0 = 1_700_000_000.0


def ledger(path: Path | None = None) -> UsageLedger:
    return UsageLedger(path, {"scheduler": NODE, "worker": NODE, "notebook": NODE})


def test_sums_are_exact_per_user_group_and_cluster() -> None:
    usage = ledger()
    usage.start("c1-scheduler", "n1", "ann", "analysts", "c1", "scheduler", 0.25, 0.5, at=T0)
    usage.start("c1-w1", "n2", "ann", "analysts", "c1", "worker", 1, 1, at=T0 + 10)
    usage.start("c2-w1", "n2", "eve", "engineers", "c2", "worker", 0.5, 3, at=T0 + 20)
    usage.stop("c1-w1", at=T0 + 3610)  # one hour of 1 core, 1 GB
    usage.stop("c2-w1", at=T0 + 1820)  # half an hour of 0.5 core, 3 GB
    usage.stop("c1-scheduler", at=T0 + 7200)  # two hours of 0.25 core, 0.5 GB
    by_user = {row.key: row for row in usage.usage(T0, T0 + 7200, "user")}
    assert by_user["ann"].core_seconds == 0.25 * 7200 + 1 * 3600
    assert by_user["ann"].gb_seconds == 0.5 * 7200 + 1 * 3600
    assert by_user["eve"].core_seconds == 0.5 * 1800
    # Each pays its larger share of the node: the scheduler 1/8 (of cores and of memory),
    # ann's worker half the cores, eve's worker three quarters of the memory.
    assert by_user["ann"].cost_usd == pytest.approx(0.2 * (0.125 * 2 + 0.5 * 1))
    assert by_user["eve"].cost_usd == pytest.approx(0.2 * 0.75 * 0.5)
    assert [r.key for r in usage.usage(T0, T0 + 7200, "cluster")] == ["c1", "c2"]
    assert {r.key: r.processes for r in usage.usage(T0, T0 + 7200, "group")} == {
        "analysts": 2, "engineers": 1}


def test_a_window_counts_only_its_part_and_open_intervals_count_to_its_end() -> None:
    usage = ledger()
    usage.start("w", "n1", "ann", "analysts", "c1", "worker", 2, 1, at=T0)
    usage.stop("w", at=T0 + 100)
    usage.start("open", "n1", "ann", "analysts", "c2", "worker", 1, 1, at=T0 + 50)
    (row,) = usage.usage(T0 + 40, T0 + 90, "user")
    assert row.core_seconds == 2 * 50 + 1 * 40
    assert usage.usage(T0 + 200, T0 + 300, "cluster")[0].core_seconds == 100  # still open
    assert usage.usage(T0 - 100, T0 - 1, "user") == []
    assert usage.open_on("n1", before=T0 + 60) == {"open"}
    assert usage.open_on("n1", before=T0 + 10) == set()  # started after the listing


def test_stops_and_starts_are_idempotent_and_a_restart_keeps_counting(tmp_path: Path) -> None:
    path = tmp_path / "usage.sqlite"
    first = ledger(path)
    first.start("w", "n1", "ann", "analysts", "c1", "worker", 1, 1, at=T0)
    first.start("w", "n1", "ann", "analysts", "c1", "worker", 9, 9, at=T0 + 5)  # again: kept
    first.close()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    again = ledger(path)
    assert again.open_on("n1", before=T0 + 1) == {"w"}
    assert again.stop("w", at=T0 + 60)
    assert not again.stop("w", at=T0 + 120)
    assert again.usage(T0, T0 + 1000, "user")[0].core_seconds == 60


def test_budget_alerts_are_remembered_per_group_month_and_level() -> None:
    usage = ledger()
    assert not usage.alerted("analysts", "2026-12", 80)
    assert usage.alerted("analysts", "2026-12", 80)
    assert not usage.alerted("analysts", "2026-12", 100)
    assert not usage.alerted("analysts", "2027-01", 80)


def test_bad_questions_name_what_is_allowed() -> None:
    with pytest.raises(ValueError, match="by: one of user, group, cluster"):
        ledger().usage(T0, T0 + 1, "node")
    with pytest.raises(ValueError, match="where: columns"):
        ledger().usage(T0, T0 + 1, "user", {"kind; DROP TABLE usage": "x"})


def test_the_month_starts_on_the_first_at_midnight_utc() -> None:
    moment = datetime(2026, 12, 17, 15, 30, tzinfo=UTC).timestamp()
    assert month_start(moment) == datetime(2026, 12, 1, tzinfo=UTC).timestamp()


def test_nodes_are_priced_from_the_settings_instance_types() -> None:
    settings = RuntimeSettings()
    prices = node_prices(settings)
    assert prices["worker"] == prices["notebook"]
    assert prices["worker"].usd_per_hour == settings.costs.hourly(settings.workers.instance_type)
    assert prices["scheduler"].usd_per_hour == settings.costs.hourly(
        settings.scheduler.instance_type)
