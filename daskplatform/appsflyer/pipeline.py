"""One pipeline run: raw drop -> validated, deduplicated events, aggregates, audit.

The same task graph runs on the synchronous scheduler (``client=None``), a LocalCluster
or any ``distributed.Client`` (a gateway cluster's included). Only small per-file and
per-group summaries travel back to the client; rows move between stages through
staging files, so no process ever holds more than one bounded piece of the data.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import dask
from dask import delayed

from daskplatform.appsflyer.layout import checksum, discover
from daskplatform.appsflyer.manifest import (
    ConservationError,
    conservation_problem,
    input_entry,
    processed_inputs,
    totals,
    write_manifest,
)
from daskplatform.appsflyer.steps import (
    Group,
    Places,
    StageResult,
    WriteResult,
    aggregate_day,
    dedup_write,
    stage_input,
)
from daskplatform.appsflyer.storage import (
    StorageOptions,
    default_storage_options,
    filesystem,
    remove,
)

DEFAULT_CHUNK_ROWS = 250_000
"""Rows validated at a time per task: the unit of worker memory in the first stage."""
_CHECKSUM_BATCH = 64


def _compute(tasks: list[Any], client: Any, timings: dict[str, float],
             stage: str) -> list[Any]:
    """Run one stage's tasks; its wall time goes into the manifest (where time goes)."""
    started = time.perf_counter()
    scheduler = client.get if client is not None else "synchronous"
    results = list(dask.compute(*tasks, scheduler=scheduler)) if tasks else []
    timings[stage] = round(time.perf_counter() - started, 3)
    return results


def _checksums(urls: list[str], options: StorageOptions, client: Any,
               timings: dict[str, float]) -> list[str]:
    def batch(chunk: list[str]) -> list[str]:
        return [checksum(url, options) for url in chunk]

    chunks = [urls[i:i + _CHECKSUM_BATCH] for i in range(0, len(urls), _CHECKSUM_BATCH)]
    tasks = [delayed(batch)(c) for c in chunks]
    return [s for part in _compute(tasks, client, timings, "checksum") for s in part]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "")


def run_pipeline(input_url: str, processed_url: str, audit_url: str, *, client: Any = None,
                 chunk_rows: int = DEFAULT_CHUNK_ROWS,
                 storage_options: StorageOptions | None = None,
                 within: Sequence[str] = ()) -> dict[str, Any]:
    """Process every new input under ``input_url`` (or only ``within`` those folders and
    files below it); returns the run's manifest.

    ``storage_options`` (fsspec) apply to every URL; by default each URL gets
    :func:`default_storage_options`. When nothing is new the returned summary has
    ``status == "up_to_date"`` and nothing is written anywhere.
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be a positive number of rows, got {chunk_rows}")

    def options(url: str) -> StorageOptions:
        if storage_options is not None:
            return dict(storage_options)
        return default_storage_options(url)

    started = _now()
    timings: dict[str, float] = {}
    found = discover(input_url, options(input_url), within)
    sums = _checksums([f.url for f in found.ready], options(input_url), client, timings)
    done = processed_inputs(audit_url, options(audit_url))
    pending = [(f, s) for f, s in zip(found.ready, sums, strict=True) if (f.url, s) not in done]
    summary: dict[str, Any] = {
        "input": input_url, "processed": processed_url, "audit": audit_url,
        "files_already_processed": len(found.ready) - len(pending),
        "waiting_for_completion_marker": found.waiting, "ignored": found.ignored,
    }
    if not pending:
        return {"status": "up_to_date", "run_id": None, **summary}

    run_id = hashlib.sha256("\n".join(f"{f.url} {s}" for f, s in pending).encode()).hexdigest()
    places = Places(run_id, processed_url, audit_url, options(input_url),
                    options(processed_url), options(audit_url))
    out_fs, _ = filesystem(processed_url, places.processed_options)
    audit_fs, _ = filesystem(audit_url, places.audit_options)
    remove(out_fs, places.staging())  # leftovers of a crashed attempt at the same inputs
    remove(audit_fs, places.quarantine())

    staged: list[StageResult] = _compute(
        [delayed(stage_input)(f, i, places, chunk_rows) for i, (f, _) in enumerate(pending)],
        client, timings, "validate")
    groups: dict[Group, list[str]] = {}
    for result in staged:
        for group, paths in result.staged.items():
            groups.setdefault(group, []).extend(paths)
    writes: list[WriteResult] = _compute(
        [delayed(dedup_write)(g, groups[g], places) for g in sorted(groups)], client, timings,
        "dedup_write")
    days = sorted({w.group[1] for w in writes if w.path})
    aggregates = _compute([delayed(aggregate_day)(d, places) for d in days], client, timings,
                          "aggregate")
    remove(out_fs, places.staging())

    written: Counter[str] = Counter()
    duplicates: Counter[str] = Counter()
    for write in writes:
        written.update(write.written)
        duplicates.update(write.duplicates)
    inputs = [
        input_entry(dataclasses.asdict(f), s, r.rows_in, written[f.url], duplicates[f.url],
                    r.quarantined, r.error)
        for (f, s), r in zip(pending, staged, strict=True)
    ]
    manifest = {
        "run_id": run_id, "status": "failed" if any(r.error for r in staged) else "complete",
        "started_at": started, "finished_at": _now(), **summary,
        "totals": totals(inputs), "stage_seconds": timings, "inputs": inputs,
        "outputs": {"events": sorted(w.path for w in writes if w.path),
                    "aggregates": aggregates, "quarantine": places.quarantine()},
    }
    problem = conservation_problem(manifest)
    manifest["conserved"] = problem is None
    manifest["manifest"] = write_manifest(manifest, audit_url, places.audit_options)
    if problem:
        raise ConservationError(problem)
    return manifest
