"""The pipeline end to end on local paths with the synchronous scheduler."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from daskplatform.appsflyer import generate, run_pipeline
from daskplatform.appsflyer.schema import CANONICAL, Reason
from tests.pipeline.helpers import (
    FAULTS,
    assert_matches_expected,
    read_dataset,
    stored_manifest,
    tree_digest,
)

SMALL = dict(rows=1500, days=1, hours=2, seed=7)


@pytest.fixture
def places(tmp_path: Path) -> tuple[str, str, str]:
    return str(tmp_path / "raw"), str(tmp_path / "processed"), str(tmp_path / "audit")


def test_faulty_datalocker_drop_is_conserved_and_every_fault_quarantined(places) -> None:
    raw, processed, audit = places
    faults = {**FAULTS, "malformed_rows": 2, "incomplete_hours": 1}
    truth = generate(raw, layout="datalocker", faults=faults, **SMALL)

    manifest = run_pipeline(raw, processed, audit)

    assert_matches_expected(manifest, truth["expected"])
    reasons = set(manifest["totals"]["quarantined_by_reason"])
    assert reasons == {r.value for r in Reason} - {"unknown_report", "bad_install_time"}
    waiting = manifest["waiting_for_completion_marker"]
    assert len({Path(p).parent for p in waiting}) == 1  # the one hour without _SUCCESS
    assert stored_manifest(manifest["manifest"], audit)["totals"] == manifest["totals"]

    quarantine = read_dataset(audit, "quarantine")
    assert quarantine["reason"].value_counts().to_dict() == \
        manifest["totals"]["quarantined_by_reason"]
    bad_time = quarantine[quarantine["reason"] == "bad_event_time"]
    assert all(d.startswith("event_time=") for d in bad_time["detail"])
    assert all("event_time" in json.loads(r) for r in bad_time["raw"])

    events = read_dataset(processed, "events")
    assert len(events) == truth["expected"]["rows_written"]
    assert events["event_id"].is_unique
    assert set(events["report"]) <= {"installs", "in_app_events", "uninstalls",
                                     "organic_installs", "organic_in_app_events",
                                     "organic_uninstalls"}
    assert (events["date"].astype(str) == events["event_time"].dt.strftime("%Y-%m-%d")).all()
    extras = events["extra"].dropna().map(json.loads)
    assert len(extras) > 0 and all(set(e) == {"is_retargeting", "custom_data"} for e in extras)


def test_rerun_changes_nothing_and_redelivered_file_is_all_duplicates(places) -> None:
    raw, processed, audit = places
    generate(raw, layout="datalocker", **SMALL)
    first = run_pipeline(raw, processed, audit)
    before = {**tree_digest(processed), **tree_digest(audit)}

    again = run_pipeline(raw, processed, audit)
    assert again["status"] == "up_to_date"
    assert again["files_already_processed"] == first["totals"]["files_processed"]
    assert {**tree_digest(processed), **tree_digest(audit)} == before

    original = sorted(Path(raw).rglob("part-00000.gz"))[0]
    shutil.copy(original, original.with_name("part-00007.gz"))  # AppsFlyer re-delivers it
    rows = len(gzip.decompress(original.read_bytes()).splitlines()) - 1
    third = run_pipeline(raw, processed, audit)
    assert third["totals"]["rows_in"] == rows
    assert third["totals"]["duplicates"] == rows
    assert third["totals"]["rows_written"] == 0
    assert tree_digest(processed) == {k: v for k, v in before.items() if k.startswith(processed)}


def test_both_layouts_give_the_same_events_and_aggregates(tmp_path: Path) -> None:
    results = {}
    for layout in ("datalocker", "pullapi"):
        raw, processed, audit = (str(tmp_path / layout / d) for d in ("raw", "out", "audit"))
        generate(raw, layout=layout, rows=1200, days=2, hours=1, seed=3)
        manifest = run_pipeline(raw, processed, audit)
        assert manifest["totals"]["rows_written"] == 1200
        columns = ["report", "event_id", *CANONICAL]
        events = read_dataset(processed, "events")[columns].astype({"report": str})
        aggregates = read_dataset(processed, "aggregates").astype({"date": str})
        results[layout] = (
            events.sort_values("event_id").reset_index(drop=True),
            aggregates.sort_values(["date", "app_id", "media_source", "campaign",
                                    "country_code"]).reset_index(drop=True))
    pd.testing.assert_frame_equal(results["datalocker"][0], results["pullapi"][0])
    pd.testing.assert_frame_equal(results["datalocker"][1], results["pullapi"][1])
    assert results["pullapi"][1]["installs"].sum() > 0
    assert results["pullapi"][1]["revenue_usd"].sum() > 0


def test_parquet_datalocker_and_small_chunks_keep_exact_counts(places) -> None:
    raw, processed, audit = places
    truth = generate(raw, layout="datalocker", fmt="parquet", faults=FAULTS, **SMALL)
    manifest = run_pipeline(raw, processed, audit, chunk_rows=50)
    assert_matches_expected(manifest, truth["expected"])


def test_chunked_csv_keeps_source_rows_pointing_at_the_raw_row(places) -> None:
    raw, processed, audit = places
    generate(raw, layout="pullapi", rows=6000, days=1, hours=1, seed=5,
             faults={"bad_currency": 4, "missing_appsflyer_id": 4})
    run_pipeline(raw, processed, audit, chunk_rows=300)
    quarantine = read_dataset(audit, "quarantine")
    assert len(quarantine) == 8
    assert quarantine["source_row"].max() > 2 * 300  # rows from a later chunk too
    for _, row in quarantine.iterrows():
        delivered = pd.read_csv(row["source_file"], dtype=str, keep_default_na=False)
        assert delivered.iloc[row["source_row"] - 1].to_dict() == json.loads(row["raw"])


def test_unknown_report_and_unreadable_file_are_traced_not_lost(places) -> None:
    raw, processed, audit = places
    generate(raw, layout="pullapi", rows=300, days=1, hours=1, seed=1)
    sample = sorted(Path(raw).glob("*.csv"))[0]
    shutil.copy(sample, Path(raw) / "mystery_export_2024-03-01.csv")
    (Path(raw) / "id1234567890_installs_broken.csv.gz").write_bytes(b"\x1f\x8bnot gzip")
    rows = len(sample.read_text().splitlines()) - 1

    manifest = run_pipeline(raw, processed, audit)

    assert manifest["status"] == "failed"
    failed = [i for i in manifest["inputs"] if i["status"] == "failed"]
    assert [Path(i["url"]).name for i in failed] == ["id1234567890_installs_broken.csv.gz"]
    assert manifest["totals"]["quarantined_by_reason"] == {"unknown_report": rows}
    assert manifest["conserved"] is True
    # The broken file was not marked processed: the next run tries it again.
    assert run_pipeline(raw, processed, audit)["totals"]["files_failed"] == 1


def test_bad_arguments_are_named(places) -> None:
    raw, processed, audit = places
    with pytest.raises(FileNotFoundError, match="--input"):
        run_pipeline(raw + "/missing", processed, audit)
    with pytest.raises(ValueError, match="chunk_rows"):
        run_pipeline(raw, processed, audit, chunk_rows=0)
    with pytest.raises(ValueError, match="--layout 'nope': allowed datalocker, pullapi"):
        generate(raw, layout="nope", rows=10)
