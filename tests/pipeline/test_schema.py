"""Both AppsFlyer vocabularies map onto one schema; report names are recognised."""

from __future__ import annotations

import pandas as pd
import pytest

from daskplatform.appsflyer.generator import parse_faults
from daskplatform.appsflyer.readers import RawChunk
from daskplatform.appsflyer.schema import (
    COLUMNS,
    canonical_name,
    report_from_filename,
    report_from_folder,
)
from daskplatform.appsflyer.validate import validate


def test_api_and_display_names_map_to_the_same_column() -> None:
    for column in COLUMNS:
        assert canonical_name(column.api_name) == column.name
        assert canonical_name(f" {column.display_name.upper()} ") == column.name
    assert canonical_name("Is Retargeting") is None


@pytest.mark.parametrize(("name", "report"), [
    ("id123_installs_2024-03-01_2024-03-07_UTC.csv", "installs"),
    ("com.example.app_organic-installs_2024-03-01_2024-03-01_UTC.csv", "organic_installs"),
    ("id123_in-app-events_2024-03-01_2024-03-01_UTC.csv", "in_app_events"),
    ("id123_organic-in-app-events_2024-03-01.csv.gz", "organic_in_app_events"),
    ("id123_uninstall-events_2024-03-01.csv", "uninstalls"),
    ("id123_organic-uninstall-events_2024-03-01.csv", "organic_uninstalls"),
    ("id123_reinstalls_2024-03-01.csv", None),
])
def test_report_from_pull_api_file_name(name: str, report: str | None) -> None:
    assert report_from_filename(name) == report


def test_report_from_data_locker_folder() -> None:
    assert report_from_folder("inapps") == "in_app_events"
    assert report_from_folder("organic_inapps") == "organic_in_app_events"
    assert report_from_folder("clicks") is None


def test_same_event_in_both_vocabularies_gets_the_same_id() -> None:
    values = {"appsflyer_id": "1700000000000-1", "event_time": "2024-03-01 10:00:00",
              "event_name": "af_purchase", "event_revenue": "1.99",
              "event_revenue_currency": "usd", "app_id": "id1", "Custom": "x"}
    api = pd.DataFrame([values]).astype("str")
    display = api.rename(columns={c.api_name: c.display_name for c in COLUMNS})
    one = validate(RawChunk(api, 1), "in_app_events", "a").events
    two = validate(RawChunk(display, 1), "in_app_events", "b").events
    assert one["event_id"].iat[0] == two["event_id"].iat[0]
    event_id = one["event_id"].iat[0]
    assert len(event_id) == 32 and event_id[:16] != event_id[16:]  # two independent hashes
    assert one["event_revenue_currency"].iat[0] == "USD"
    assert one["extra"].iat[0] == '{"Custom":"x"}'
    other = validate(RawChunk(api.assign(event_revenue="2.99"), 1), "in_app_events", "a")
    assert other.events["event_id"].iat[0] != one["event_id"].iat[0]


def test_first_failing_check_names_the_reason() -> None:
    rows = pd.DataFrame([
        {"appsflyer_id": "", "event_time": "bad", "event_name": "x", "app_id": "a"},
        {"appsflyer_id": "1", "event_time": "2009-12-31 23:59:59", "event_name": "x",
         "app_id": "a"},
        {"appsflyer_id": "1", "event_time": "2024-03-01 00:00:00", "event_name": "x",
         "app_id": "a", "event_revenue_usd": "inf"},
    ]).fillna("").astype("str")
    result = validate(RawChunk(rows, 1), "installs", "f")
    assert result.quarantine["reason"].tolist() == [
        "missing_appsflyer_id", "bad_event_time", "non_numeric_revenue"]
    assert result.quarantine["source_row"].tolist() == [1, 2, 3]
    assert result.events.empty


def test_fault_spec_errors_name_the_allowed_values() -> None:
    assert parse_faults("bad_currency=2, extra_columns") == {"bad_currency": 2,
                                                            "extra_columns": 1}
    with pytest.raises(ValueError, match="bad_currency='x' must be a whole number"):
        parse_faults("bad_currency=x")
