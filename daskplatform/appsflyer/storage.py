"""Local paths and ``s3://`` URLs through one fsspec interface.

Storage options are built once on the client and shipped with every task, so workers on
other hosts reach the same endpoint (moto locally, S3 on AWS). Credentials are never in
them: each host takes its own from the environment or its instance role.
"""

from __future__ import annotations

import os
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from daskplatform.aws import ENDPOINT_ENV

StorageOptions = dict[str, Any]


def default_storage_options(url: str) -> StorageOptions:
    """Options for ``url``: for S3, the platform's endpoint override, and no listing cache
    (another task may have just written the prefix being listed)."""
    if not url.startswith("s3://"):
        return {}
    options: StorageOptions = {"use_listings_cache": False}
    endpoint = os.environ.get(ENDPOINT_ENV) or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        options["endpoint_url"] = endpoint
    return options


def filesystem(url: str, options: StorageOptions) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem and the protocol-less path of ``url``."""
    fs, path = fsspec.core.url_to_fs(url, **options)
    return fs, path.rstrip("/")


def join(*parts: str) -> str:
    return "/".join(p.strip("/") if i else p.rstrip("/") for i, p in enumerate(parts))


def write_parquet(fs: fsspec.AbstractFileSystem, path: str, table: pa.Table) -> None:
    """Write one Parquet file; a whole-object put on S3, so readers never see half a file."""
    parent = path.rsplit("/", 1)[0]
    fs.makedirs(parent, exist_ok=True)
    with fs.open(path, "wb") as handle:
        pq.write_table(table, handle, compression="snappy")


def write_arrow(fs: fsspec.AbstractFileSystem, path: str, table: pa.Table) -> None:
    """Arrow IPC, uncompressed: for staging, which is read once, moments later, so
    writing and reading at memory speed beats saving bytes."""
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    with fs.open(path, "wb") as handle, pa.ipc.new_file(handle, table.schema) as writer:
        writer.write_table(table)


def read_arrow(fs: fsspec.AbstractFileSystem, path: str) -> pa.Table:
    with fs.open(path, "rb") as handle:
        return pa.ipc.open_file(pa.py_buffer(handle.read())).read_all()


def read_parquet(fs: fsspec.AbstractFileSystem, path: str,
                 columns: list[str] | None = None) -> pa.Table:
    with fs.open(path, "rb") as handle:
        return pq.read_table(handle, columns=columns)


def remove(fs: fsspec.AbstractFileSystem, path: str) -> None:
    """Delete a file or a whole prefix if it exists."""
    if fs.exists(path):
        fs.rm(path, recursive=True)
