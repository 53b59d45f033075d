"""AppsFlyer pipeline throughput: Dask on N local workers vs plain pandas, same steps.

    ./dev bench appsflyer [--rows 5000000] [--days 7] [--workers 2] [--dir DIR]

Generates a Data Locker drop (gzip CSV, hourly files), then runs
  * the pipeline (``run_pipeline``) on a LocalCluster of single-threaded workers, and
  * a plain pandas implementation of the same steps in one process: checksum, read and
    validate every file, deduplicate, write events/quarantine in the same layout, daily
    aggregates.
Both use the same reader and validation code, so the ratio measures the execution model.
Reports rows/s for each, the ratio (floor: 1.3x on 2 workers), and peak RSS per worker.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import pandas as pd
import psutil

from daskplatform.appsflyer import generate, run_pipeline
from daskplatform.appsflyer.layout import checksum, discover
from daskplatform.appsflyer.pipeline import DEFAULT_CHUNK_ROWS
from daskplatform.appsflyer.readers import read_chunks
from daskplatform.appsflyer.schema import (
    AGGREGATE_DIMENSIONS,
    AGGREGATES_SCHEMA,
    EVENTS_SCHEMA,
    QUARANTINE_SCHEMA,
    REPORTS,
)
from daskplatform.appsflyer.steps import to_arrow
from daskplatform.appsflyer.storage import write_parquet
from daskplatform.appsflyer.validate import validate

FLOOR = 1.3
FAULTS = {"bad_event_time": 100, "non_numeric_revenue": 100, "bad_currency": 100,
          "duplicate_rows": 1000, "duplicate_files": 5, "extra_columns": 20}


class PeakMemory:
    """Samples the resident memory of some processes from outside (ru_maxrss would count
    the memory a spawned process inherited from its parent)."""

    def __init__(self, pids: list[int], interval: float = 0.1) -> None:
        self.peaks_mib = {pid: 0.0 for pid in pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, args=(interval,), daemon=True)

    def _sample(self, interval: float) -> None:
        processes = [psutil.Process(pid) for pid in self.peaks_mib]
        while not self._stop.wait(interval):
            for process in processes:
                rss = process.memory_info().rss / 2**20
                self.peaks_mib[process.pid] = max(self.peaks_mib[process.pid], rss)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def pandas_pipeline(raw: str, out: str, audit: str) -> dict[str, Any]:
    """The same steps as the pipeline, the way one would write them with pandas alone."""
    import fsspec

    fs = fsspec.filesystem("file")
    started = time.perf_counter()
    inputs = discover(raw, {}).ready
    sums = [checksum(f.url, {}) for f in inputs]
    events, quarantine, rows_in = [], [], 0
    for source in inputs:
        for chunk in read_chunks(source, {}, DEFAULT_CHUNK_ROWS):
            checked = validate(chunk, source.report, source.url)
            rows_in += len(chunk.frame) + len(chunk.malformed)
            events.append(checked.events)
            quarantine.append(checked.quarantine)
    frame = pd.concat(events, ignore_index=True).sort_values(["source_file", "source_row"])
    kept = frame.drop_duplicates("event_id")
    bad = pd.concat(quarantine, ignore_index=True)
    if len(bad):
        write_parquet(fs, f"{audit}/quarantine/part-0.parquet", to_arrow(bad, QUARANTINE_SCHEMA))
    hour = kept["event_time"].dt.floor("h")
    for (report, when), rows in kept.groupby([kept["report"], hour], sort=True):
        path = (f"{out}/events/report={report}/date={when:%Y-%m-%d}/"
                f"part-h{when:%H}-pandas.parquet")
        write_parquet(fs, path, to_arrow(rows.sort_values(["event_time", "event_id"]),
                                       EVENTS_SCHEMA))
    dims = list(AGGREGATE_DIMENSIONS)
    measure = kept["report"].map(REPORTS)
    daily = kept.assign(
        date=kept["event_time"].dt.strftime("%Y-%m-%d"),
        installs=(measure == "installs").astype("int64"),
        events=(measure == "events").astype("int64"),
        uninstalls=(measure == "uninstalls").astype("int64"),
        revenue_usd=kept["event_revenue_usd"].where(measure == "events", 0.0).fillna(0.0),
    ).groupby(["date", *dims], dropna=False)[
        ["installs", "events", "uninstalls", "revenue_usd"]].sum().reset_index()
    for day, rows in daily.groupby("date"):
        write_parquet(fs, f"{out}/aggregates/date={day}/part-0.parquet",
                      to_arrow(rows, AGGREGATES_SCHEMA))
    return {"seconds": time.perf_counter() - started, "rows_in": rows_in,
            "rows_written": len(kept), "duplicates": len(frame) - len(kept),
            "quarantined": len(bad), "files": len(sums)}


def run_pandas(raw: str, out: str, audit: str) -> dict[str, Any]:
    """In a fresh process, so its peak memory is its own."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        pid = pool.submit(os.getpid).result()
        with PeakMemory([pid]) as memory:
            result = pool.submit(pandas_pipeline, raw, out, audit).result()
    return {**result, "peak_rss_mib": round(memory.peaks_mib[pid])}


def run_dask(raw: str, out: str, audit: str, workers: int, memory: str) -> dict[str, Any]:
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      memory_limit=memory, host="127.0.0.1", dashboard_address=None) as cluster, \
            Client(cluster) as client:
        pids = list(client.run(os.getpid).values())
        with PeakMemory(pids) as memory:
            started = time.perf_counter()
            manifest = run_pipeline(raw, out, audit, client=client)
            seconds = time.perf_counter() - started
        peaks = [round(memory.peaks_mib[pid]) for pid in pids]
    totals = manifest["totals"]
    return {"seconds": seconds, **{k: totals[k] for k in
                                   ("rows_in", "rows_written", "duplicates", "quarantined")},
            "files": totals["files_processed"], "peak_rss_mib_per_worker": peaks,
            "stage_seconds": manifest["stage_seconds"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--memory-per-worker", default="4GiB")
    parser.add_argument("--rounds", type=int, default=2,
                        help="alternate Dask and pandas this many times; the best of each "
                             "counts (shared machines are noisy)")
    parser.add_argument("--dir", help="work directory (default: a temporary one)")
    args = parser.parse_args()
    dask_runs: list[dict[str, Any]] = []
    pandas_runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(dir=args.dir) as work:
        raw = f"{work}/raw"
        started = time.perf_counter()
        with ProcessPoolExecutor(1) as pool:  # its memory is returned when it ends
            truth = pool.submit(generate, raw, layout="datalocker", rows=args.rows,
                                days=args.days, faults=FAULTS).result()
        generated = time.perf_counter() - started
        for n in range(args.rounds):
            dask_runs.append(run_dask(raw, f"{work}/dask{n}/out", f"{work}/dask{n}/audit",
                                      args.workers, args.memory_per_worker))
            pandas_runs.append(run_pandas(raw, f"{work}/pandas{n}/out",
                                          f"{work}/pandas{n}/audit"))
    counts = ("rows_in", "rows_written", "duplicates", "quarantined")
    agree = all(run[k] == truth["expected"][k] for run in dask_runs + pandas_runs
                for k in counts)
    rows = truth["expected"]["rows_in"]
    best_dask = min(r["seconds"] for r in dask_runs)
    best_pandas = min(r["seconds"] for r in pandas_runs)
    ratio = best_pandas / best_dask
    report = {
        "rows": rows, "files": dask_runs[0]["files"], "generate_seconds": round(generated, 1),
        "expected": truth["expected"],
        "dask": {"workers": args.workers, "rows_per_second": round(rows / best_dask),
                 "seconds": [round(r["seconds"], 1) for r in dask_runs],
                 "stage_seconds": [r["stage_seconds"] for r in dask_runs],
                 "peak_rss_mib_per_worker": [max(p) for p in
                                             zip(*(r["peak_rss_mib_per_worker"]
                                                   for r in dask_runs), strict=True)]},
        "pandas": {"rows_per_second": round(rows / best_pandas),
                   "seconds": [round(r["seconds"], 1) for r in pandas_runs],
                   "peak_rss_mib": max(r["peak_rss_mib"] for r in pandas_runs)},
        "ratio": round(ratio, 2), "floor": FLOOR, "counts_agree": agree,
    }
    print(json.dumps(report, indent=2, default=str))
    return 0 if agree and ratio >= FLOOR else 1


if __name__ == "__main__":
    sys.exit(main())
