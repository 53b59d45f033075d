"""``dask-platform pipeline`` as a user types it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from distributed import LocalCluster

from daskplatform.appsflyer import generate
from daskplatform.appsflyer.cli import main


def test_generate_then_run_then_rerun(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    raw, processed, audit = (str(tmp_path / d) for d in ("raw", "processed", "audit"))
    assert main(["generate", "--layout", "pullapi", "--rows", "400", "--out", raw,
                 "--days", "1", "--faults", "bad_event_time=2,duplicate_rows=3"]) == 0
    expected = json.loads(capsys.readouterr().out)["expected"]

    run = ["run", "--input", raw, "--processed", processed, "--audit", audit]
    assert main(run) == 0
    totals = json.loads(capsys.readouterr().out)["totals"]
    assert (totals["rows_in"], totals["duplicates"], totals["quarantined_by_reason"]) == (
        expected["rows_in"], 3, {"bad_event_time": 2})

    assert main(run) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "up_to_date"


def test_bad_input_gets_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["generate", "--layout", "pullapi", "--rows", "10", "--out", str(tmp_path),
                 "--faults", "typo=1"]) == 2
    assert "unknown fault 'typo'; allowed: bad_event_time" in capsys.readouterr().err
    assert main(["run", "--input", str(tmp_path / "none"), "--processed", str(tmp_path),
                 "--audit", str(tmp_path)]) == 1
    assert "--input" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["generate", "--layout", "xml", "--rows", "1", "--out", str(tmp_path)])
    assert "invalid choice: 'xml'" in capsys.readouterr().err


def test_run_on_a_local_cluster_and_on_a_scheduler_address(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    raw = str(tmp_path / "raw")
    generate(raw, layout="pullapi", rows=300, days=1, hours=1, seed=2)
    local = ["--input", raw, "--processed", str(tmp_path / "a"), "--audit", str(tmp_path / "a")]
    assert main(["run", *local, "--scheduler", "local", "--workers", "1",
                 "--memory-per-worker", "1GiB"]) == 0
    assert json.loads(capsys.readouterr().out)["totals"]["rows_written"] == 300

    with LocalCluster(n_workers=1, threads_per_worker=1, host="127.0.0.1",
                      dashboard_address=None) as cluster:
        remote = ["--input", raw, "--processed", str(tmp_path / "b"),
                  "--audit", str(tmp_path / "b"), "--scheduler", cluster.scheduler_address]
        assert main(["run", *remote]) == 0
        ran_there = set(cluster.scheduler.task_prefixes)
    assert json.loads(capsys.readouterr().out)["totals"]["rows_written"] == 300
    assert {"stage_input", "dedup_write", "aggregate_day"} <= ran_there
