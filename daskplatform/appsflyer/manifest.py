"""Run manifests: what each run read (with checksums), what became of every row.

A manifest is written last, so its presence means the run finished. The set of
(input, checksum) pairs recorded as processed across all manifests is what makes a
re-run on the same input a no-op.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from daskplatform.appsflyer.storage import StorageOptions, filesystem, join

COUNTS = ("rows_in", "rows_written", "duplicates", "quarantined")


class ConservationError(RuntimeError):
    """Rows in != written + duplicates + quarantined: a bug, never expected."""


def manifests_dir(audit_url: str, options: StorageOptions) -> str:
    return join(filesystem(audit_url, options)[1], "manifests")


def processed_inputs(audit_url: str, options: StorageOptions) -> set[tuple[str, str]]:
    """(url, sha256) of every input some earlier run processed completely."""
    fs, _ = filesystem(audit_url, options)
    folder = manifests_dir(audit_url, options)
    done: set[tuple[str, str]] = set()
    for path in fs.glob(join(folder, "*.json")):
        with fs.open(path, "r", encoding="utf-8") as handle:
            manifest = json.load(handle)
        done.update((i["url"], i["sha256"]) for i in manifest["inputs"]
                    if i["status"] == "processed")
    return done


def input_entry(source: dict[str, Any], sha256: str, rows_in: int, written: int,
                duplicates: int, quarantined: Counter[str], error: str | None) -> dict[str, Any]:
    entry = {**source, "sha256": sha256, "status": "failed" if error else "processed",
             "rows_in": rows_in, "rows_written": written, "duplicates": duplicates,
             "quarantined": sum(quarantined.values()),
             "quarantined_by_reason": dict(sorted(quarantined.items()))}
    if error:
        entry["error"] = error
    return entry


def totals(inputs: list[dict[str, Any]]) -> dict[str, Any]:
    by_reason: Counter[str] = Counter()
    for entry in inputs:
        by_reason.update(entry["quarantined_by_reason"])
    summed = {name: sum(entry[name] for entry in inputs) for name in COUNTS}
    return {**summed, "quarantined_by_reason": dict(sorted(by_reason.items())),
            "files_processed": sum(e["status"] == "processed" for e in inputs),
            "files_failed": sum(e["status"] == "failed" for e in inputs)}


def conservation_problem(manifest: dict[str, Any]) -> str | None:
    """Per input and in total, every row read must be accounted for exactly once; the
    first place where it is not, or None."""
    for entry in [*manifest["inputs"], manifest["totals"]]:
        accounted = entry["rows_written"] + entry["duplicates"] + entry["quarantined"]
        if entry["rows_in"] != accounted:
            return (f"{entry.get('url', 'run total')}: rows_in {entry['rows_in']} != "
                    f"rows_written {entry['rows_written']} + duplicates {entry['duplicates']}"
                    f" + quarantined {entry['quarantined']}")
    return None


def write_manifest(manifest: dict[str, Any], audit_url: str, options: StorageOptions) -> str:
    """Store under a name that sorts by time and names the run."""
    fs, _ = filesystem(audit_url, options)
    stamp = manifest["finished_at"].replace("-", "").replace(":", "").split(".")[0]
    path = join(manifests_dir(audit_url, options), f"{stamp}Z-{manifest['run_id'][:16]}.json")
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    with fs.open(path, "w", encoding="utf-8") as handle:
        json.dump(manifest, handle, indent=2, sort_keys=False)
    return path
