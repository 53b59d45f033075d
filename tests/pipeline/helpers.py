"""Shared checks for pipeline tests: read outputs back, fingerprint a whole tree."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pandas as pd
import pyarrow.dataset as ds

from daskplatform.appsflyer.storage import default_storage_options, filesystem, join

FAULTS = {
    "bad_event_time": 3, "missing_appsflyer_id": 2, "missing_app_id": 1,
    "missing_event_name": 1, "non_numeric_revenue": 2, "bad_currency": 2,
    "bad_country_code": 1, "duplicate_rows": 6, "duplicate_files": 1, "extra_columns": 2,
}


def read_dataset(url: str, folder: str) -> pd.DataFrame:
    fs, root = filesystem(url, default_storage_options(url))
    path = join(root, folder)
    if not fs.exists(path):
        return pd.DataFrame()
    return ds.dataset(path, filesystem=fs, format="parquet",
                      partitioning="hive").to_table().to_pandas()


def tree_digest(url: str) -> dict[str, str]:
    """path -> sha256 of every file under ``url``: equal digests mean nothing changed."""
    fs, root = filesystem(url, default_storage_options(url))
    return {p: hashlib.sha256(fs.cat_file(p)).hexdigest() for p in sorted(fs.find(root))}


def assert_matches_expected(manifest: dict[str, Any], expected: dict[str, Any]) -> None:
    totals = manifest["totals"]
    for key in ("rows_in", "rows_written", "duplicates", "quarantined",
                "quarantined_by_reason"):
        assert totals[key] == expected[key], (key, totals[key], expected[key])
    assert manifest["conserved"] is True
    assert totals["rows_in"] == (totals["rows_written"] + totals["duplicates"]
                                 + totals["quarantined"])
    for entry in manifest["inputs"]:
        assert entry["rows_in"] == (entry["rows_written"] + entry["duplicates"]
                                    + entry["quarantined"]), entry


def stored_manifest(path: str, url: str) -> dict[str, Any]:
    fs, _ = filesystem(url, default_storage_options(url))
    return json.loads(fs.cat_file(path))
