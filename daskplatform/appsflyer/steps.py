"""The pipeline's tasks. Each runs on a Dask worker and touches a bounded amount of data:

* ``stage_input``: one raw file, chunk by chunk -> validated rows staged per
  (report, event date, event hour), rejected rows to the quarantine;
* ``dedup_write``: one (report, date, hour) group -> rows not seen before, in this run
  or any earlier one, written to ``events/``;
* ``aggregate_day``: one date, file by file -> ``aggregates/``.

Every duplicate shares the event's report and event time, so it lands in the same group:
deduplicating group by group is exact, and memory is one chunk, one report-hour or one
day's partial aggregates, whatever the size of the input.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pandas as pd
import pyarrow as pa
import pyarrow.acero as ac
import pyarrow.compute as pc
import pyarrow.dataset as ds

from daskplatform.appsflyer.layout import InputFile
from daskplatform.appsflyer.readers import read_chunks
from daskplatform.appsflyer.schema import (
    AGGREGATE_DIMENSIONS,
    AGGREGATES_SCHEMA,
    EVENTS_SCHEMA,
    QUARANTINE_SCHEMA,
    REPORTS,
    STAGED_SCHEMA,
)
from daskplatform.appsflyer.storage import (
    StorageOptions,
    filesystem,
    join,
    read_arrow,
    read_parquet,
    remove,
    write_arrow,
    write_parquet,
)
from daskplatform.appsflyer.validate import validate

Group = tuple[str, str, str]
"""(report, yyyy-mm-dd, hh) of the event time."""


@dataclass
class Places:
    """Where a run reads and writes; shipped with every task."""

    run_id: str
    processed_url: str
    audit_url: str
    input_options: StorageOptions
    processed_options: StorageOptions
    audit_options: StorageOptions

    @property
    def tag(self) -> str:
        """Short run id used in file names (deterministic per input set)."""
        return self.run_id[:16]

    def staging(self) -> str:
        return join(filesystem(self.processed_url, self.processed_options)[1],
                    "_staging", self.tag)

    def quarantine(self) -> str:
        return join(filesystem(self.audit_url, self.audit_options)[1],
                    "quarantine", f"run={self.tag}")


@dataclass
class StageResult:
    url: str
    rows_in: int = 0
    quarantined: Counter[str] = field(default_factory=Counter)
    staged: dict[Group, list[str]] = field(default_factory=dict)
    error: str | None = None


def to_arrow(frame: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False)


def stage_input(source: InputFile, index: int, places: Places, chunk_rows: int) -> StageResult:
    """Validate one raw file. A file that cannot be read is reported, not half-counted:
    whatever it had staged or quarantined is removed again and its rows count nowhere."""
    result = StageResult(source.url)
    out_fs, _ = filesystem(places.processed_url, places.processed_options)
    audit_fs, _ = filesystem(places.audit_url, places.audit_options)
    written: list[tuple[object, str]] = []
    try:
        for number, chunk in enumerate(read_chunks(source, places.input_options,
                                                   chunk_rows)):
            name = f"{index:06d}-{number:05d}"
            checked = validate(chunk, source.report, source.url)
            result.rows_in += len(chunk.frame) + len(chunk.malformed)
            if len(checked.quarantine):
                path = join(places.quarantine(), name + ".parquet")
                write_parquet(audit_fs, path, to_arrow(checked.quarantine, QUARANTINE_SCHEMA))
                written.append((audit_fs, path))
                result.quarantined.update(checked.quarantine["reason"].value_counts().to_dict())
            if checked.events.empty:
                continue
            events = to_arrow(checked.events, STAGED_SCHEMA)
            hours = pc.floor_temporal(events["event_time"], unit="hour")
            for hour in pc.unique(hours).to_pylist():
                group = (str(source.report), hour.strftime("%Y-%m-%d"), hour.strftime("%H"))
                path = join(places.staging(), *group, name + ".arrow")
                write_arrow(out_fs, path, events.filter(pc.equal(hours, hour)))
                written.append((out_fs, path))
                result.staged.setdefault(group, []).append(path)
    except (OSError, ValueError, EOFError, pa.ArrowException) as exc:
        for fs, path in written:
            remove(fs, path)
        return StageResult(source.url, error=f"{type(exc).__name__}: {exc}")
    return result


@dataclass
class WriteResult:
    group: Group
    written: Counter[str] = field(default_factory=Counter)
    duplicates: Counter[str] = field(default_factory=Counter)
    path: str | None = None


def events_dir(root: str, report: str, day: str) -> str:
    return join(root, "events", f"report={report}", f"date={day}")


def dedup_write(group: Group, staged: list[str], places: Places) -> WriteResult:
    """Keep the first copy of each event (earlier runs first, then input order), write the
    rest of the group as one file whose name depends only on the run's inputs, so a
    re-run after a crash rewrites the same file instead of adding one."""
    fs, root = filesystem(places.processed_url, places.processed_options)
    report, day, hour = group
    folder = events_dir(root, report, day)
    target = join(folder, f"part-h{hour}-{places.tag}.parquet")
    earlier = [p for p in fs.glob(join(folder, f"part-h{hour}-*.parquet")) if p != target]
    seen = pa.concat_tables([read_parquet(fs, p, ["event_id"]) for p in earlier]) \
        if earlier else pa.table({"event_id": pa.array([], pa.string())})
    rows = pa.concat_tables([read_arrow(fs, p) for p in staged]).sort_by(
        [("source_file", "ascending"), ("source_row", "ascending")])
    ids = rows["event_id"].to_pandas()
    duplicate = (ids.duplicated(keep="first") | ids.isin(seen["event_id"].to_pandas())).to_numpy()
    sources = rows["source_file"].to_pandas()
    result = WriteResult(group)
    result.written.update(sources[~duplicate].value_counts().to_dict())
    result.duplicates.update(sources[duplicate].value_counts().to_dict())
    if duplicate.all():
        remove(fs, target)
        return result
    kept = rows.filter(pa.array(~duplicate)).sort_by(
        [("event_time", "ascending"), ("event_id", "ascending")])
    write_parquet(fs, target, kept.select(EVENTS_SCHEMA.names).cast(EVENTS_SCHEMA))
    result.path = target
    return result


def aggregate_day(day: str, places: Places) -> str:
    """Recompute one day's aggregates from every events file of that day (all runs), so
    the result is the same however the events arrived. Arrow streams the files through a
    hash aggregation: memory is the number of groups, not the number of rows."""
    fs, root = filesystem(places.processed_url, places.processed_options)
    dims = list(AGGREGATE_DIMENSIONS)
    partials = []
    for report, measure in REPORTS.items():
        paths = fs.glob(join(events_dir(root, report, day), "*.parquet"))
        if not paths:
            continue
        scan = ac.Declaration("scan", ac.ScanNodeOptions(
            ds.dataset(paths, filesystem=fs, format="parquet"),
            columns=[*dims, "event_revenue_usd"]))
        aggregate = ac.Declaration("aggregate", ac.AggregateNodeOptions(
            [([], "hash_count_all", None, "rows"),
             ("event_revenue_usd", "hash_sum", pc.ScalarAggregateOptions(min_count=0), "revenue")],
            keys=dims))
        partial = ac.Declaration.from_sequence([scan, aggregate]).to_table().to_pandas()
        for name in ("installs", "events", "uninstalls"):
            partial[name] = partial["rows"] if name == measure else 0
        partial["revenue_usd"] = partial["revenue"] if measure == "events" else 0.0
        partials.append(partial.drop(columns=["rows", "revenue"]))
    daily = pd.concat(partials).groupby(dims, dropna=False, sort=False).sum().reset_index()
    daily = daily.sort_values(dims, na_position="first", kind="stable")
    target = join(root, "aggregates", f"date={day}", "part-0.parquet")
    write_parquet(fs, target, to_arrow(daily, AGGREGATES_SCHEMA))
    return target
