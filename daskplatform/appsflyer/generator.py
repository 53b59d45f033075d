"""Realistic AppsFlyer raw data in either layout, any size, with faults injected on demand.

One seed gives the same events in both layouts, so tests can check that the layouts
agree. Every written row carries a hidden label (clean, duplicate, or the reason it must
be quarantined); the returned ``expected`` counts come from those labels, which lets
tests assert the pipeline's counts exactly rather than approximately.
"""

from __future__ import annotations

import gzip
import io
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from daskplatform.appsflyer.layout import COMPLETION_MARKER
from daskplatform.appsflyer.schema import COLUMNS, Reason
from daskplatform.appsflyer.storage import StorageOptions, default_storage_options, filesystem, join

LAYOUTS = ("datalocker", "pullapi")
FORMATS = ("csv", "parquet")

ROW_FAULTS: dict[str, tuple[str, tuple[str, ...]]] = {
    Reason.BAD_EVENT_TIME.value: (
        "event_time", ("2024-13-45 25:61:00", "yesterday", "", "1970-01-01 00:00:00")),
    Reason.MISSING_APPSFLYER_ID.value: ("appsflyer_id", ("",)),
    Reason.MISSING_APP_ID.value: ("app_id", ("",)),
    Reason.MISSING_EVENT_NAME.value: ("event_name", ("",)),
    Reason.NON_NUMERIC_REVENUE.value: ("event_revenue_usd", ("12,50", "N/A", "abc", "$3.99")),
    Reason.BAD_CURRENCY.value: ("event_revenue_currency", ("US$", "DOLLAR", "XYZ", "12")),
    Reason.BAD_COUNTRY_CODE.value: ("country_code", ("USA", "1", "U-S")),
}
"""Fault name (= the reason code it must produce) -> column and the bad values used."""

FILE_FAULTS = ("malformed_rows", "duplicate_rows", "duplicate_files", "extra_columns",
               "incomplete_hours")
"""malformed_rows: lines with a wrong field count (CSV only); duplicate_rows: clean rows
re-delivered in extra files; duplicate_files: whole files re-delivered under new names;
extra_columns: files with columns the schema does not know; incomplete_hours: Data Locker
hour folders without their completion marker."""

FAULTS = (*ROW_FAULTS, *FILE_FAULTS)

_EXTRA_COLUMNS = {"is_retargeting": "false", "custom_data": '{"ab_test":"B"}'}
_DATALOCKER_NAMES = {
    "installs": "installs", "in_app_events": "inapps", "uninstalls": "uninstalls",
    "organic_installs": "organic_installs", "organic_in_app_events": "organic_inapps",
    "organic_uninstalls": "organic_uninstalls",
}
_PULL_NAMES = {
    "installs": "installs", "in_app_events": "in-app-events", "uninstalls": "uninstall-events",
    "organic_installs": "organic-installs", "organic_in_app_events": "organic-in-app-events",
    "organic_uninstalls": "organic-uninstall-events",
}
_APPS = (("id1234567890", "ios"), ("com.example.puzzle", "android"))
_SOURCES = ("googleadwords_int", "Facebook Ads", "tiktokglobal_int", "applovin_int",
            "unityads_int", "snapchat_int")
_COUNTRIES = ("US", "GB", "DE", "FR", "BR", "IN", "JP", "KR", "CA", "AU", "ES", "IT")
_CITIES = ("New York", "London", "Berlin", "Paris", "Sao Paulo", "Mumbai", "Tokyo", "Seoul")
_EVENTS = ("af_purchase", "af_level_achieved", "af_tutorial_completion", "af_add_to_cart",
           "af_login")
_CURRENCIES = (("USD", 1.0), ("EUR", 1.08), ("GBP", 1.27), ("JPY", 0.0067))


def parse_faults(text: str) -> dict[str, int]:
    """``"bad_event_time=5,duplicate_files=1"`` -> counts; a bare name means 1."""
    faults: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, count = item.partition("=")
        if name not in FAULTS:
            raise ValueError(f"--faults: unknown fault {name!r}; allowed: {', '.join(FAULTS)}")
        if count and not (count.isdigit() and int(count) >= 0):
            raise ValueError(f"--faults: {name}={count!r} must be a whole number >= 0")
        faults[name] = int(count or 1)
    return faults


@dataclass
class _File:
    path: str
    rows: pd.DataFrame  # canonical column names, string values, plus "_label"
    folder_ready: bool = True
    extra_columns: bool = False
    malformed: list[int] = field(default_factory=list)  # positions in rows


def _pick(rng: np.random.Generator, values: tuple[Any, ...], n: int) -> np.ndarray:
    return np.asarray(values, dtype=object)[rng.integers(0, len(values), n)]


def _seconds_text(seconds: np.ndarray) -> np.ndarray:
    return np.char.replace(np.datetime_as_string(seconds.astype("datetime64[s]")), "T", " ")


def events(rows: int, *, seed: int = 0, start: str = "2024-03-01", days: int = 2,
           hours: int = 24) -> pd.DataFrame:
    """``rows`` clean, distinct events (canonical names, string values) in the first
    ``hours`` hours of each of ``days`` days (fewer hours: fewer Data Locker files)."""
    rng = np.random.default_rng(seed)
    users = max(rows // 20, 10)
    t0 = np.datetime64(start, "s").astype(np.int64)
    user_app = rng.integers(0, len(_APPS), users)
    user_organic = rng.random(users) < 0.4
    user_install = t0 + rng.integers(-30 * 86_400, 0, users)
    user_ids = (pd.Series(1_700_000_000_000 + rng.integers(0, 10**11, users)).astype(str) + "-"
                + pd.Series(rng.integers(10**18, 9 * 10**18, users)).astype(str)).to_numpy()
    user_device = (pd.Series(rng.integers(0, 2**62, users)).map("{:016x}".format)).to_numpy()
    user_source = np.where(user_organic, "organic", _pick(rng, _SOURCES, users))
    user_campaign = np.where(user_organic, "",
                             _pick(rng, tuple(f"spring_sale_{i:02d}" for i in range(12)), users))

    user = rng.integers(0, users, rows)
    kind = rng.choice(3, rows, p=(0.15, 0.8, 0.05))  # install, in-app event, uninstall
    when = t0 + rng.integers(0, days, rows) * 86_400 + rng.integers(0, hours * 3600, rows)
    name = np.where(kind == 0, "install", np.where(kind == 2, "uninstall",
                                                   _pick(rng, _EVENTS, rows)))
    purchase = name == "af_purchase"
    currency_index = rng.integers(0, len(_CURRENCIES), rows)
    revenue = np.round(rng.choice([0.99, 1.99, 4.99, 9.99, 19.99, 49.99], rows), 2)
    rate = np.array([r for _, r in _CURRENCIES])[currency_index]
    sku = rng.integers(0, 40, rows)
    # Distinct events: an event repeating another's user, name, value and revenue in the
    # same second (so the pipeline would rightly call it a duplicate) moves a second later.
    key = pd.DataFrame({"u": user, "n": name, "s": np.where(kind == 1, sku, -1),
                        "c": np.where(purchase, currency_index, -1),
                        "r": np.where(purchase, revenue, -1.0)})
    while True:
        repeat = pd.concat([key, pd.Series(when, name="t")], axis=1).duplicated().to_numpy()
        if not repeat.any():
            break
        when = when + repeat

    report_base = np.array(["installs", "in_app_events", "uninstalls"], dtype=object)[kind]
    report = np.where(user_organic[user], "organic_" + report_base, report_base)
    app = user_app[user]
    frame = pd.DataFrame({
        "report": report,
        "appsflyer_id": user_ids[user],
        "event_time": _seconds_text(when),
        "install_time": _seconds_text(np.where(kind == 0, when, user_install[user])),
        "event_name": name,
        "event_value": np.where(kind == 1, pd.Series(sku).map('{{"af_content_id":"sku_{}"}}'
                                                             .format).to_numpy(), ""),
        "event_revenue": np.where(purchase, revenue.astype(str), ""),
        "event_revenue_currency": np.where(purchase, np.array(
            [c for c, _ in _CURRENCIES], dtype=object)[currency_index], ""),
        "event_revenue_usd": np.where(purchase, np.round(revenue * rate, 4).astype(str), ""),
        "media_source": user_source[user],
        "channel": np.where(user_organic[user], "", "Paid"),
        "campaign": user_campaign[user],
        "campaign_id": np.where(user_organic[user], "", pd.Series(user % 997).astype(str)),
        "adset": np.where(user_organic[user], "", "adset_a"),
        "ad": np.where(user_organic[user], "", "video_15s"),
        "attributed_touch_type": np.where(user_organic[user], "", "click"),
        "country_code": _pick(rng, _COUNTRIES, users)[user],
        "city": _pick(rng, _CITIES, users)[user],
        "platform": np.array([p for _, p in _APPS], dtype=object)[app],
        "os_version": _pick(rng, ("14", "15", "17.4", "13"), users)[user],
        "app_version": _pick(rng, ("3.2.0", "3.3.1", "3.4.0"), users)[user],
        "app_id": np.array([a for a, _ in _APPS], dtype=object)[app],
        "customer_user_id": np.where(rng.random(rows) < 0.5, "", "cu_" + user.astype(str)),
        "advertising_id": np.where(app == 1, user_device[user], ""),
        "idfa": np.where(app == 0, user_device[user], ""),
    })
    return frame.astype("str")


def _split(frame: pd.DataFrame, layout: str, root: str) -> list[_File]:
    day = frame["event_time"].str.slice(0, 10)
    if layout == "datalocker":
        hour = frame["event_time"].str.slice(11, 13)
        keys = [frame["report"], day, hour]
    else:
        keys = [frame["app_id"], frame["report"], day]
    files = []
    for key, rows in frame.groupby(keys, sort=True):
        if layout == "datalocker":
            report, dt, hour = key
            folder = join(root, f"t={_DATALOCKER_NAMES[report]}", f"dt={dt}", f"h={int(hour)}")
            path = join(folder, "part-00000")
        else:
            app, report, dt = key
            path = join(root, f"{app}_{_PULL_NAMES[report]}_{dt}_{dt}_UTC")
        files.append(_File(path, rows.drop(columns="report").assign(_label="")))
    return files


def _inject(files: list[_File], faults: dict[str, int], rng: np.random.Generator,
            csv: bool) -> list[_File]:
    """Apply faults to distinct clean rows and files; returns the extra files to write."""
    ends = np.cumsum([len(f.rows) for f in files])
    needed = sum(faults.get(n, 0) for n in (*ROW_FAULTS, "malformed_rows", "duplicate_rows"))
    if needed > ends[-1]:
        raise ValueError(f"--faults ask for {needed} faulty/duplicated rows but only "
                         f"{ends[-1]} rows are generated; raise --rows")
    slots = []
    for g in rng.choice(ends[-1], needed, replace=False):
        n = int(np.searchsorted(ends, g, side="right"))
        slots.append((files[n], int(g - (ends[n - 1] if n else 0))))
    picks = iter(range(needed))
    for reason, (column, bad) in ROW_FAULTS.items():
        for n in range(faults.get(reason, 0)):
            target, i = slots[next(picks)]
            target.rows.iloc[i, target.rows.columns.get_loc(column)] = bad[n % len(bad)]
            target.rows.iloc[i, target.rows.columns.get_loc("_label")] = reason
    if faults.get("malformed_rows") and not csv:
        raise ValueError("--faults malformed_rows needs a CSV format (Parquet has no lines)")
    for _ in range(faults.get("malformed_rows", 0)):
        target, i = slots[next(picks)]
        target.malformed.append(i)
        target.rows.iloc[i, target.rows.columns.get_loc("_label")] = Reason.MALFORMED_ROW.value
    extra: list[_File] = []
    redelivered: dict[str, list[pd.Series]] = {}
    sources = {f.path: f for f in files}
    for _ in range(faults.get("duplicate_rows", 0)):
        target, i = slots[next(picks)]
        redelivered.setdefault(target.path, []).append(target.rows.iloc[i])
    for path, rows in redelivered.items():
        name = (path.rsplit("/", 1)[0] + "/part-00001" if "/t=" in path
                else path + "_redelivered")
        copy = pd.DataFrame(rows).assign(_label="duplicate")
        extra.append(_File(name, copy, sources[path].folder_ready))
    for n in range(min(faults.get("extra_columns", 0), len(files))):
        files[n].extra_columns = True
    for n in rng.permutation(len(files))[:faults.get("duplicate_files", 0)]:
        source = files[n]
        labels = source.rows["_label"].where(source.rows["_label"] != "", "duplicate")
        name = (source.path.rsplit("/", 1)[0] + "/part-00009" if "/t=" in source.path
                else source.path + "_copy")
        extra.append(_File(name, source.rows.assign(_label=labels), source.folder_ready,
                           source.extra_columns, list(source.malformed)))
    return extra


def _write(fs: Any, item: _File, layout: str, fmt: str) -> None:
    rows = item.rows.drop(columns="_label")
    if item.extra_columns:
        rows = rows.assign(**_EXTRA_COLUMNS)
    if layout == "pullapi":
        names = {c.name: c.display_name for c in COLUMNS}
        rows = rows.rename(columns={k: names.get(k, k.replace("_", " ").title())
                                    for k in rows.columns})
    else:
        rows = rows.rename(columns={c.name: c.api_name for c in COLUMNS})
    table = pa.Table.from_pandas(rows, preserve_index=False)
    buffer = io.BytesIO()
    if fmt == "parquet":
        pq.write_table(table, buffer)
        _put(fs, item.path + ".parquet", buffer.getvalue())
        return
    pcsv.write_csv(table, buffer, pcsv.WriteOptions(quoting_style="needed"))
    data = buffer.getvalue()
    if item.malformed:
        lines = data.split(b"\n")
        for i in item.malformed:
            lines[i + 1] = b"truncated,line"
        data = b"\n".join(lines)
    if layout == "datalocker":
        _put(fs, item.path + ".gz", gzip.compress(data, compresslevel=1))
    else:
        _put(fs, item.path + ".csv", data)


def _put(fs: Any, path: str, data: bytes) -> None:
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    fs.pipe_file(path, data)


def generate(out_url: str, *, layout: str, rows: int, faults: dict[str, int] | None = None,
             seed: int = 0, start: str = "2024-03-01", days: int = 2, hours: int = 24,
             fmt: str = "csv",
             storage_options: StorageOptions | None = None) -> dict[str, Any]:
    """Write a raw drop under ``out_url``; returns what the pipeline must find in it."""
    if layout not in LAYOUTS:
        raise ValueError(f"--layout {layout!r}: allowed {', '.join(LAYOUTS)}")
    if fmt not in FORMATS or (layout == "pullapi" and fmt != "csv"):
        raise ValueError(f"--format {fmt!r}: datalocker allows {', '.join(FORMATS)}, "
                         "pullapi only csv")
    if rows < 1:
        raise ValueError(f"--rows must be at least 1, got {rows}")
    if not 1 <= hours <= 24:
        raise ValueError(f"--hours must be between 1 and 24, got {hours}")
    faults = faults or {}
    if faults.get("incomplete_hours") and layout != "datalocker":
        raise ValueError("--faults incomplete_hours applies to the datalocker layout only")
    options = storage_options if storage_options is not None else default_storage_options(out_url)
    fs, root = filesystem(out_url, options)
    rng = np.random.default_rng(seed + 1)
    files = _split(events(rows, seed=seed, start=start, days=days, hours=hours), layout, root)
    for n in rng.permutation(len(files))[:faults.get("incomplete_hours", 0)]:
        files[n].folder_ready = False
    files += _inject(files, faults, rng, csv=fmt == "csv")

    labels: Counter[str] = Counter()
    waiting_rows = 0
    ready_folders: set[str] = set()
    for item in files:
        _write(fs, item, layout, fmt)
        if item.folder_ready:
            labels.update(item.rows["_label"].tolist())
            if layout == "datalocker":
                ready_folders.add(item.path.rsplit("/", 1)[0])
        else:
            waiting_rows += len(item.rows)
    for folder in ready_folders:
        _put(fs, join(folder, COMPLETION_MARKER), b"")
    quarantined = {k: v for k, v in labels.items() if k not in ("", "duplicate")}
    return {
        "layout": layout, "format": fmt, "files": len(files), "events": rows,
        "expected": {
            "rows_in": sum(labels.values()), "rows_written": labels[""],
            "duplicates": labels["duplicate"], "quarantined": sum(quarantined.values()),
            "quarantined_by_reason": dict(sorted(quarantined.items())),
            "waiting_rows": waiting_rows,
        },
    }
