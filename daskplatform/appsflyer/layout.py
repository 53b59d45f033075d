"""Find input files in a raw drop and tell which layout and report each one is.

Data Locker: ``.../t=<report>/dt=<yyyy-mm-dd>/h=<0-23|late>/part-*`` (gzip CSV or
Parquet); an hour folder is complete once AppsFlyer writes ``_SUCCESS`` into it, and files
of an incomplete hour wait for a later run. Pull API / exports: ``*.csv`` or ``*.csv.gz``
files whose name carries the report (``<app>_<report>_<from>_<to>_<tz>.csv``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from daskplatform.appsflyer.schema import report_from_filename, report_from_folder
from daskplatform.appsflyer.storage import StorageOptions, filesystem

COMPLETION_MARKER = "_SUCCESS"
"""Written by AppsFlyer into a Data Locker folder once every part file in it is there."""


@dataclass(frozen=True)
class InputFile:
    """One raw file. ``report`` is None when neither folder nor name says which one."""

    url: str
    layout: str  # "datalocker" | "pullapi"
    report: str | None
    format: str  # "csv" | "parquet"
    compression: str | None  # "gzip" | None


@dataclass(frozen=True)
class Discovery:
    ready: list[InputFile]
    waiting: list[str]
    """Data Locker files whose hour has no completion marker yet."""
    ignored: list[str]
    """Files that are neither layout (listed in the manifest, never silently dropped)."""


def _format(name: str) -> tuple[str, str | None] | None:
    lower = name.lower()
    if lower.endswith(".parquet"):
        return "parquet", None
    if lower.endswith((".csv.gz", ".gz")):
        return "csv", "gzip"
    if lower.endswith(".csv"):
        return "csv", None
    return None


def classify(relative: str, url: str) -> InputFile | None:
    """The input described by a path relative to the drop root, or None if not an input."""
    parts = relative.split("/")
    name = parts[-1]
    fmt = _format(name)
    folders = {p.split("=", 1)[0]: p.split("=", 1)[1] for p in parts[:-1] if "=" in p}
    if "t" in folders:
        if not name.startswith("part-") or fmt is None:
            return None
        return InputFile(url, "datalocker", report_from_folder(folders["t"]), *fmt)
    if fmt is None or fmt[0] != "csv" or name.startswith(("_", ".")):
        return None
    return InputFile(url, "pullapi", report_from_filename(name), *fmt)


def discover(root_url: str, options: StorageOptions, within: Sequence[str] = ()) -> Discovery:
    """Every input under ``root_url``, sorted by URL (the order that decides which copy of
    a duplicated event is kept); with ``within`` (folders or files below the root, as
    URLs), only those, still classified from the root (the pipeline watcher: one drop,
    without listing and checksumming a year of earlier ones)."""
    fs, root = filesystem(root_url, options)
    if not fs.exists(root):
        raise FileNotFoundError(f"--input {root_url}: no such directory or prefix")
    protocol = root_url.split("://", 1)[0] + "://" if "://" in root_url else ""
    scopes = [filesystem(url, options)[1] for url in within] or [root]
    outside = [s for s in scopes if s != root and not s.startswith(root + "/")]
    if outside:
        raise ValueError(f"{', '.join(outside)}: not below the input {root_url}")
    paths = sorted({path for scope in scopes for path in fs.find(scope)})
    markers = {p.rsplit("/", 1)[0] for p in paths if p.endswith("/" + COMPLETION_MARKER)}
    ready: list[InputFile] = []
    waiting: list[str] = []
    ignored: list[str] = []
    for path in paths:
        if path.endswith("/" + COMPLETION_MARKER):
            continue
        url = protocol + path
        found = classify(path[len(root) + 1:], url)
        if found is None:
            ignored.append(url)
        elif found.layout == "datalocker" and path.rsplit("/", 1)[0] not in markers:
            waiting.append(url)
        else:
            ready.append(found)
    return Discovery(ready, waiting, ignored)


def checksum(url: str, options: StorageOptions) -> str:
    """SHA-256 of the file's bytes as delivered: the manifest's record of what was read."""
    fs, path = filesystem(url, options)
    digest = hashlib.sha256()
    with fs.open(path, "rb", block_size=8 << 20) as handle:
        for block in iter(lambda: handle.read(8 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
