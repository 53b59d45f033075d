"""Raw chunk -> typed events plus quarantined rows, each with one reason code.

Every row of the chunk ends up in exactly one of the two outputs; that is what makes
the run's conservation check (in = written + duplicates + quarantined) exact.
Timestamps without an offset are taken as UTC, which is how AppsFlyer delivers raw data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from daskplatform.appsflyer.readers import RawChunk
from daskplatform.appsflyer.schema import (
    COLUMNS,
    DEDUP_KEY,
    ISO_4217,
    Reason,
    canonical_name,
)

EARLIEST = pd.Timestamp("2010-01-01", tz="UTC")
LATEST = pd.Timestamp("2100-01-01", tz="UTC")
"""Event and install times outside this window are corrupt, not real AppsFlyer data."""

_HASH_KEYS = ("appsflyer-dedup1", "appsflyer-dedup2")  # pandas takes 16-byte keys
_HEX = np.array([f"{i:02x}" for i in range(256)], dtype="S2")


@dataclass
class Validated:
    events: pd.DataFrame
    """Canonical columns (typed) + event_id, extra, report, source_file, source_row."""
    quarantine: pd.DataFrame
    """report, reason, detail, source_file, source_row, raw."""


def event_ids(frame: pd.DataFrame) -> pd.Series:
    """A 128-bit content hash of the dedup key as 32 hex chars: the same event gets the
    same id in every file, layout and run (two seeded 64-bit hashes make a collision,
    which would drop a real row, negligible at any realistic volume)."""
    key = frame[list(DEDUP_KEY)]
    halves = np.empty((len(frame), 2), dtype=">u8")
    for i, hash_key in enumerate(_HASH_KEYS):
        halves[:, i] = pd.util.hash_pandas_object(
            key, index=False, categorize=False, hash_key=hash_key
        ).to_numpy()
    hexed = _HEX[halves.view(np.uint8).reshape(len(frame), 16)]
    text = np.ascontiguousarray(hexed).view("S32").ravel().astype("U32")
    return pd.Series(text, index=frame.index, dtype="str")


def _map_columns(raw: pd.DataFrame) -> tuple[dict[str, str], list[str]]:
    """canonical -> raw header, and the raw headers the schema does not know."""
    mapping: dict[str, str] = {}
    unknown: list[str] = []
    for header in raw.columns:
        name = canonical_name(str(header))
        if name is None or name in mapping:
            unknown.append(str(header))
        else:
            mapping[name] = str(header)
    return mapping, unknown


def _json_rows(frame: pd.DataFrame) -> pd.Series:
    if frame.empty:
        return pd.Series([], index=frame.index, dtype="str")
    lines = frame.to_json(orient="records", lines=True, force_ascii=False).splitlines()
    return pd.Series(lines, index=frame.index, dtype="str")


def _timestamps(text: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Parsed UTC times and a mask of values present but unusable."""
    parsed = pd.to_datetime(text.where(text != ""), format="ISO8601", utc=True, errors="coerce")
    parsed = parsed.dt.as_unit("us")
    bad = (text != "") & (parsed.isna() | (parsed < EARLIEST) | (parsed >= LATEST))
    return parsed.where(~bad), bad


def _numbers(text: pd.Series) -> tuple[pd.Series, pd.Series]:
    parsed = pd.to_numeric(text.where(text != ""), errors="coerce").astype("float64")
    bad = (text != "") & ~np.isfinite(parsed.to_numpy(na_value=np.nan))
    return parsed, bad


def validate(chunk: RawChunk, report: str | None, source_file: str) -> Validated:
    raw = chunk.frame
    mapping, unknown = _map_columns(raw)
    empty = pd.Series("", index=raw.index, dtype="str")
    text = {c.name: raw[mapping[c.name]].astype("str") if c.name in mapping else empty
            for c in COLUMNS}
    for name in ("event_revenue_currency", "country_code"):
        text[name] = text[name].str.strip().str.upper()

    event_time, bad_event_time = _timestamps(text["event_time"])
    install_time, bad_install_time = _timestamps(text["install_time"])
    revenue, bad_revenue = _numbers(text["event_revenue"])
    revenue_usd, bad_revenue_usd = _numbers(text["event_revenue_usd"])
    currency = text["event_revenue_currency"]
    country = text["country_code"]

    checks: list[tuple[Reason, pd.Series | bool, str]] = [
        (Reason.UNKNOWN_REPORT, report is None, ""),
        (Reason.MISSING_APPSFLYER_ID, text["appsflyer_id"] == "", "appsflyer_id"),
        (Reason.MISSING_APP_ID, text["app_id"] == "", "app_id"),
        (Reason.MISSING_EVENT_NAME, text["event_name"] == "", "event_name"),
        (Reason.BAD_EVENT_TIME, bad_event_time | (text["event_time"] == ""), "event_time"),
        (Reason.BAD_INSTALL_TIME, bad_install_time, "install_time"),
        (Reason.NON_NUMERIC_REVENUE, bad_revenue, "event_revenue"),
        (Reason.NON_NUMERIC_REVENUE, bad_revenue_usd, "event_revenue_usd"),
        (Reason.BAD_CURRENCY, (currency != "") & ~currency.isin(ISO_4217),
         "event_revenue_currency"),
        (Reason.BAD_COUNTRY_CODE, (country != "") & ~country.str.fullmatch("[A-Z]{2}"),
         "country_code"),
    ]
    masks = [np.broadcast_to(np.asarray(m, dtype=bool), len(raw)) for _, m, _ in checks]
    first_failed = np.select(masks, np.arange(len(checks)), default=-1)  # first check wins
    rejected = first_failed >= 0
    reason, detail = [], []
    for check, row in zip(first_failed[rejected], np.flatnonzero(rejected), strict=True):
        code, _, column = checks[check]
        reason.append(code.value)
        detail.append(f"{column}={text[column].iat[row][:200]}" if column
                      else "report type not recognised from the path")
    rows = np.arange(chunk.first_row, chunk.first_row + len(raw))

    quarantine = pd.DataFrame({
        "report": report, "reason": pd.array(reason, dtype="str"),
        "detail": pd.array(detail, dtype="str"), "source_file": source_file,
        "source_row": rows[rejected], "raw": _json_rows(raw[rejected]).to_numpy(),
    })
    if chunk.malformed:
        quarantine = pd.concat([quarantine, pd.DataFrame({
            "report": report, "reason": Reason.MALFORMED_ROW.value,
            "detail": [f"line {n if n >= 0 else '?'}: wrong number of fields"
                       for n, _ in chunk.malformed],
            "source_file": source_file, "source_row": [n for n, _ in chunk.malformed],
            "raw": [json.dumps(line) for _, line in chunk.malformed],
        })], ignore_index=True)

    keep = ~rejected
    typed = {c.name: text[c.name][keep].replace("", None) for c in COLUMNS}
    typed.update(event_time=event_time[keep], install_time=install_time[keep],
                 event_revenue=revenue[keep], event_revenue_usd=revenue_usd[keep])
    events = pd.DataFrame(typed)
    events.insert(0, "report", report)
    events.insert(1, "event_id", event_ids(events))
    events["extra"] = _json_rows(raw.loc[keep, unknown]) if unknown else None
    events["source_file"] = source_file
    events["source_row"] = rows[keep]
    return Validated(events.reset_index(drop=True), quarantine.reset_index(drop=True))
