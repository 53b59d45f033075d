"""The workday simulation: small days whose waits, nodes and costs are worked out by hand,
the safety of scale-in, caps, priorities, the workload model and determinism."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import components.worker_pool as worker_pool
from daskplatform.settings import PlatformSettings, load_stack_file
from daskplatform.simulate import autoscaler
from daskplatform.simulate.cli import main, with_changes
from daskplatform.simulate.costs import bill
from daskplatform.simulate.report import as_json, summarise
from daskplatform.simulate.workday import DAY_SECONDS, Outcome, Workday
from daskplatform.simulate.workload import (
    ARRIVAL,
    HOUR,
    Burst,
    Session,
    UserPlan,
    cluster_max_workers,
    group_sizes,
    team,
)

ROOT = Path(__file__).resolve().parents[2]
DEV = load_stack_file(str(ROOT / "Pulumi.dev.yaml"))
NO_LUNCH = (DAY_SECONDS, DAY_SECONDS)
BOOT = 300.0


def settings(*changes: str) -> PlatformSettings:
    """Dev settings with ``changes``; the CPU baseline is off (scaleOutCpu 99: a busy
    worker uses 90 %) unless a test turns it back on, so nodes come from the backlog."""
    return with_changes(DEV, ["workers.scaleOutCpu=99", *changes])


def user(name: str, group: str, start: float, *bursts: Burst,
         abandon: bool = False) -> UserPlan:
    return UserPlan(name, group, start, NO_LUNCH, DAY_SECONDS,
                    (Session(start, bursts, abandon),))


def worker_waits(outcome: Outcome, group: str | None = None) -> list[float]:
    return sorted(w.seconds for w in outcome.waits
                  if w.role == "worker" and group in (None, w.group))


def test_a_backlog_adds_exactly_the_nodes_it_needs_once_they_boot() -> None:
    """One node (2 workers) and a burst of 4 at 30 s: 2 start at once, the alarm at 60 s
    sees a backlog of one node and adds it; it serves at 360 s, so the other two waited
    330 s. While it boots the backlog stays, but it is not added again (warm-up)."""
    day = Workday(settings("workers.min=1"), [
        user("u01", "data_engineers", 30.0, Burst(0.0, 4, 600.0, keep=False))], BOOT)
    outcome = day.run()
    assert worker_waits(outcome) == [0.0, 0.0, 330.0, 330.0]
    launched = [(n.launched, n.joins) for n in outcome.nodes]
    assert launched == [(-300.0, 0.0), (60.0, 360.0)]
    # 2400 worker-seconds: 660 done by 360 s at 2 workers, 1740 left at 4: done at 795 s.
    running = {s.at: s.running_workers for s in outcome.samples}
    assert running[780.0] == 4 and running[840.0] == 0
    # Idle and CPU below 30 % from the 840 s period: the fifth such period removes one node.
    assert [(r.node_id, r.at, r.processes) for r in outcome.removals] == [
        ("worker-001", 1080.0, 0)]


def test_costs_are_node_hours_times_the_price_against_always_max() -> None:
    chosen = settings("workers.min=1")
    outcome = Workday(chosen, [
        user("u01", "data_engineers", 30.0, Burst(0.0, 4, 600.0, keep=False))], BOOT).run()
    node_hours = (1080.0 + (DAY_SECONDS - 60.0)) / HOUR  # removed at 1080 s; launched at 60 s
    hosts = 24 * (0.428 + 0.0456)  # m5.2xlarge scheduler host, t3.medium gateway host
    day = bill(chosen, outcome.nodes, 0.0, DAY_SECONDS)
    assert day.worker_node_hours == pytest.approx(node_hours)
    assert day.total_usd == pytest.approx(node_hours * 0.096 + hosts)
    assert day.always_max_usd == pytest.approx(24 * 20 * 0.096 + hosts)
    assert day.savings == pytest.approx(1 - (node_hours * 0.096 + hosts)
                                        / (24 * 20 * 0.096 + hosts))
    office = bill(chosen, outcome.nodes, 8 * HOUR, 18 * HOUR)
    assert office.worker_node_hours == pytest.approx(10.0)  # only worker-002 by then


def test_the_cpu_baseline_adds_one_node_after_three_busy_periods() -> None:
    """Two busy workers fill the one node (90 % CPU) from 30 s: high at 60, 120 and 180 s,
    so one node at 180 s; it counts as warming up for 300 s, and with it in service the
    average is 45 %, so no second one."""
    outcome = Workday(settings("workers.min=1", "workers.scaleOutCpu=70"), [
        user("u01", "data_analysts", 30.0, Burst(0.0, 2, 3600.0, keep=False))], BOOT).run()
    assert [n.launched for n in outcome.nodes] == [-300.0, 180.0]
    assert worker_waits(outcome) == [0.0, 0.0]


def test_scale_in_removes_only_empty_nodes_and_never_goes_below_min() -> None:
    """An admin keeps 4 idle workers on the two minimum nodes (CPU low, nodes busy); an
    analyst's burst needs a third node and leaves it empty. Only that node goes; after the
    admin's cluster idles out, the two empty nodes stay: they are the minimum."""
    outcome = Workday(settings("workers.min=2"), [
        user("u01", "admins", 30.0, Burst(0.0, 4, 600.0, keep=True), abandon=True),
        user("u02", "data_analysts", 30.0, Burst(0.0, 2, 300.0, keep=False)),
    ], BOOT).run()
    assert [(r.node_id, r.processes) for r in outcome.removals] == [("worker-003", 0)]
    assert outcome.idle_stops == 1
    assert min(s.serving for s in outcome.samples) == 2
    assert all(n.left is None for n in outcome.nodes[:2])


def test_a_worker_past_the_users_total_is_capped_not_queued() -> None:
    """An engineer's first cluster keeps its 4 workers (the group total, 4 cores); the
    2 workers of a second cluster are refused by the user ledger and never wait."""
    plan = UserPlan("u01", "data_engineers", 30.0, NO_LUNCH, DAY_SECONDS, (
        Session(30.0, (Burst(0.0, 4, 600.0, keep=True),), abandon=True),
        Session(1200.0, (Burst(0.0, 2, 600.0, keep=False),), abandon=False)))
    outcome = Workday(settings(), [plan], BOOT).run()
    assert outcome.capped_workers == 2
    assert worker_waits(outcome) == [0.0] * 4


def test_room_that_frees_goes_to_the_higher_priority_group_first() -> None:
    """An engineer fills the only node until 100 s; an analyst, then an admin, ask for 2
    workers each. The room freed at 100 s takes the admin's, though they asked later; the
    analyst's wait for the nodes the backlog added at 60 s (in service at 360 s)."""
    outcome = Workday(settings("workers.min=1"), [
        user("u01", "data_engineers", 10.0, Burst(0.0, 2, 90.0, keep=False)),
        user("u02", "data_analysts", 20.0, Burst(0.0, 2, 600.0, keep=False)),
        user("u03", "admins", 25.0, Burst(0.0, 2, 600.0, keep=False)),
    ], BOOT).run()
    assert [n.launched for n in outcome.nodes] == [-300.0, 60.0, 60.0]
    assert worker_waits(outcome, "admins") == [75.0, 75.0]
    assert worker_waits(outcome, "data_analysts") == [340.0, 340.0]


def test_clusters_wait_for_the_scheduler_host_by_priority() -> None:
    """An m5.large scheduler host holds 8 schedulers. Eight analysts fill it; a ninth
    analyst and then an admin wait; the first slot freed goes to the admin."""
    chosen = settings("scheduler.instanceType=m5.large", "expectedConcurrentUsers=8")
    plans = [user(f"u{i:02d}", "data_analysts", float(i),
                  Burst(0.0, 1, 600.0 + i, keep=False)) for i in range(1, 10)]
    plans.append(user("u10", "admins", 10.0, Burst(0.0, 1, 600.0, keep=False)))
    outcome = Workday(chosen, plans, BOOT).run()
    waits = {w.group: w.seconds for w in outcome.waits if w.role == "scheduler" and w.seconds}
    # Analyst i's burst ends at i + 600 + i: slots free at 602 s and 604 s.
    assert waits == {"admins": 602.0 - 10.0, "data_analysts": 604.0 - 9.0}


def test_the_team_and_its_plans_follow_the_model() -> None:
    assert group_sizes(30) == {"admins": 3, "data_engineers": 12, "data_analysts": 15}
    assert sum(group_sizes(7).values()) == 7
    plans = team(30, 1, DEV.quotas, DEV.clusters)
    for plan in plans:
        most = cluster_max_workers(DEV.quotas.groups[plan.group], DEV.clusters)
        assert ARRIVAL[0] <= plan.arrive <= ARRIVAL[1] < plan.leave
        assert all(1 <= b.workers <= most for s in plan.sessions for b in s.bursts)
        starts = [s.start for s in plan.sessions]
        assert starts == sorted(starts) and starts[0] >= plan.arrive
    assert [cluster_max_workers(DEV.quotas.groups[g], DEV.clusters)
            for g in ("admins", "data_engineers", "data_analysts")] == [16, 4, 2]


def test_a_day_is_the_same_for_the_same_seed() -> None:
    def day(seed: int) -> str:
        plans = team(30, seed, DEV.quotas, DEV.clusters)
        return as_json([summarise("x", 45.0, Workday(DEV, plans, 45.0).run(), DEV)])

    first = day(3)
    assert first == day(3)
    assert first != day(4)


def test_the_alarm_timing_is_the_stacks() -> None:
    assert autoscaler.METRIC_PERIOD_SECONDS == worker_pool.METRIC_PERIOD_SECONDS
    assert autoscaler.SCALE_OUT_PERIODS == worker_pool.SCALE_OUT_PERIODS


def test_the_command_writes_the_plot_and_summaries(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    stack = str(ROOT / "Pulumi.dev.yaml")
    assert main(["--users", "4", "--no-warm-pool", "--stack-file", stack,
                 "--set", "workers.max=25", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "workday.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    [summary] = json.loads((tmp_path / "workday.json").read_text())
    assert summary["variant"] == "no warm pool" and summary["day"]["always_max_usd"] > 0
    assert "with workers.max=25" in capsys.readouterr().out
    assert main(["--stack-file", stack, "--set", "workers.max=0", "--out", str(tmp_path)]) == 2
