"""One chunk through validation: the columns each output has, the reason and detail of
every quarantined row, and the edges of what is accepted (pure: no storage)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from daskplatform.appsflyer.readers import RawChunk
from daskplatform.appsflyer.schema import COLUMNS
from daskplatform.appsflyer.validate import validate

GOOD = {"appsflyer_id": "1700000000000-1", "event_time": "2024-03-01 10:00:00",
        "event_name": "af_purchase", "app_id": "id1"}


def chunk(*rows: dict[str, str], first_row: int = 1,
          malformed: list[tuple[int, str]] | None = None) -> RawChunk:
    frame = pd.DataFrame(list(rows)).fillna("").astype("str")
    return RawChunk(frame, first_row, malformed or [])


def test_events_have_the_canonical_columns_typed_between_provenance() -> None:
    events = validate(chunk({**GOOD, "event_revenue": "1.5", "install_time": "",
                             "Country Code": " de "}, first_row=41),
                      "in_app_events", "s3://raw/f.csv").events
    assert list(events.columns) == ["report", "event_id", *(c.name for c in COLUMNS), "extra",
                                    "source_file", "source_row"]
    row = events.iloc[0]
    assert (row["report"], row["source_file"], row["source_row"]) == (
        "in_app_events", "s3://raw/f.csv", 41)
    assert row["event_time"] == pd.Timestamp("2024-03-01 10:00:00", tz="UTC")
    assert str(events["event_time"].dtype) == "datetime64[us, UTC]"
    assert pd.isna(row["install_time"]) and pd.isna(row["event_revenue_usd"])
    assert row["event_revenue"] == 1.5 and str(events["event_revenue"].dtype) == "float64"
    assert row["country_code"] == "DE" and pd.isna(row["city"]) and row["extra"] is None


def test_times_with_an_offset_are_converted_to_utc() -> None:
    events = validate(chunk({**GOOD, "event_time": "2024-03-01T12:00:00+02:00"}),
                      "installs", "f").events
    assert events["event_time"].iat[0] == pd.Timestamp("2024-03-01 10:00:00", tz="UTC")


@pytest.mark.parametrize(("event_time", "kept"), [
    ("2010-01-01 00:00:00", True), ("2009-12-31 23:59:59", False),
    ("2099-12-31 23:59:59", True), ("2100-01-01 00:00:00", False),
    ("2150-06-01 00:00:00", False), ("", False)])
def test_event_times_outside_2010_to_2100_are_quarantined(event_time: str, kept: bool) -> None:
    result = validate(chunk({**GOOD, "event_time": event_time}), "installs", "f")
    assert (len(result.events), len(result.quarantine)) == ((1, 0) if kept else (0, 1))
    if not kept:
        assert result.quarantine["detail"].tolist() == [f"event_time={event_time}"]


@pytest.mark.parametrize(("change", "reason", "detail"), [
    ({"app_id": ""}, "missing_app_id", "app_id="),
    ({"event_name": ""}, "missing_event_name", "event_name="),
    ({"install_time": "yesterday"}, "bad_install_time", "install_time=yesterday"),
    ({"install_time": "2100-01-02"}, "bad_install_time", "install_time=2100-01-02"),
    ({"event_revenue": "1,99"}, "non_numeric_revenue", "event_revenue=1,99"),
    ({"event_revenue_usd": "nan"}, "non_numeric_revenue", "event_revenue_usd=nan"),
    ({"event_revenue_currency": "usdx"}, "bad_currency", "event_revenue_currency=USDX"),
    ({"country_code": "usa"}, "bad_country_code", "country_code=USA"),
    ({"country_code": "U1"}, "bad_country_code", "country_code=U1"),
])
def test_each_check_quarantines_with_its_reason_and_the_offending_value(
        change: dict[str, str], reason: str, detail: str) -> None:
    raw = {**GOOD, **change}
    result = validate(chunk(GOOD, raw, first_row=10), "installs", "s3://raw/f.csv")
    assert result.quarantine.to_dict("records") == [{
        "report": "installs", "reason": reason, "detail": detail,
        "source_file": "s3://raw/f.csv", "source_row": 11,
        "raw": json.dumps(raw, separators=(",", ":"))}]
    assert result.events["source_row"].tolist() == [10]


def test_an_unrecognised_report_quarantines_every_row_with_why() -> None:
    result = validate(chunk(GOOD, GOOD), None, "f")
    assert result.events.empty
    assert result.quarantine["reason"].tolist() == ["unknown_report"] * 2
    assert result.quarantine["detail"].tolist() == [
        "report type not recognised from the path"] * 2


def test_a_long_value_is_cut_to_200_characters_in_the_detail() -> None:
    result = validate(chunk({**GOOD, "event_revenue": "x" * 500}), "installs", "f")
    assert result.quarantine["detail"].iat[0] == "event_revenue=" + "x" * 200


def test_malformed_lines_are_quarantined_after_the_rows_with_their_line() -> None:
    result = validate(chunk({**GOOD, "app_id": ""}, GOOD,
                            malformed=[(7, "a,b,c"), (-1, "tail")]), "installs", "f")
    quarantine = result.quarantine
    assert list(quarantine.columns) == ["report", "reason", "detail", "source_file",
                                        "source_row", "raw"]
    assert quarantine["reason"].tolist() == ["missing_app_id", "malformed_row",
                                             "malformed_row"]
    assert quarantine["detail"].tolist()[1:] == ["line 7: wrong number of fields",
                                                 "line ?: wrong number of fields"]
    assert quarantine["source_row"].tolist() == [1, 7, -1]
    assert quarantine["raw"].tolist()[1:] == ['"a,b,c"', '"tail"']
    assert len(result.events) == 1 and list(quarantine.index) == [0, 1, 2]


def test_a_header_seen_twice_keeps_the_first_and_the_second_goes_to_extra() -> None:
    frame = pd.DataFrame([["1", "2024-03-01 10:00:00", "first", "id1", "second"]],
                         columns=["appsflyer_id", "event_time", "event_name", "app_id",
                                  "Event Name"])
    events = validate(RawChunk(frame, 1), "installs", "f").events
    assert events["event_name"].iat[0] == "first"
    assert events["extra"].iat[0] == '{"Event Name":"second"}'


def test_event_ids_do_not_depend_on_the_rows_position() -> None:
    other = {**GOOD, "appsflyer_id": "1700000000000-2"}
    alone = validate(chunk(GOOD), "installs", "a").events
    second = validate(chunk(other, GOOD, first_row=100), "installs", "b").events
    assert second["event_id"].iat[1] == alone["event_id"].iat[0]
    assert second["event_id"].iat[0] != alone["event_id"].iat[0]


def test_event_ids_are_lowercase_hex_over_every_byte_value() -> None:
    """Two thousand ids hold every byte value, 0xff included, in their hex."""
    rows = [{**GOOD, "appsflyer_id": f"1700000000000-{n}"} for n in range(2000)]
    ids = validate(chunk(*rows), "installs", "f").events["event_id"]
    assert ids.str.fullmatch("[0-9a-f]{32}").all() and ids.nunique() == 2000
    assert any("ff" in {i[k:k + 2] for k in range(0, 32, 2)} for i in ids)


def test_quarantined_rows_keep_their_text_unescaped() -> None:
    raw = {**GOOD, "city": "Zürich", "app_id": ""}
    (kept,) = validate(chunk(raw), "installs", "f").quarantine["raw"]
    assert json.loads(kept) == raw and "Zürich" in kept
