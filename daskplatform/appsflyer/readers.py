"""Read one raw file in bounded chunks, every value as the text AppsFlyer sent.

Values stay strings here so validation sees exactly what was delivered (a revenue of
"12,5" must be rejected, not guessed). CSV is streamed with pyarrow and Parquet read batch
by batch, so memory is one chunk whatever the file size. Rows with the wrong number of
fields do not stop the file: they come back as ``malformed`` for the quarantine.
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Iterator
from dataclasses import dataclass, field

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from daskplatform.appsflyer.layout import InputFile
from daskplatform.appsflyer.storage import StorageOptions, filesystem


@dataclass
class RawChunk:
    frame: pd.DataFrame
    """Original headers, string values, "" where the file had nothing."""
    first_row: int
    """1-based record number (within the file) of the frame's first row."""
    malformed: list[tuple[int, str]] = field(default_factory=list)
    """(line number or -1, text) of rows that could not be split into the header's fields."""


def read_chunks(source: InputFile, options: StorageOptions, chunk_rows: int) -> Iterator[RawChunk]:
    fs, path = filesystem(source.url, options)
    with fs.open(path, "rb") as handle:
        if source.format == "parquet":
            yield from _parquet_chunks(handle, chunk_rows)
        else:
            yield from _csv_chunks(handle, source.compression, chunk_rows)


def _parquet_chunks(handle: io.IOBase, chunk_rows: int) -> Iterator[RawChunk]:
    first = 1
    for batch in pq.ParquetFile(handle).iter_batches(batch_size=chunk_rows):
        strings = pa.table([col.cast(pa.string()) for col in batch.columns],
                           names=batch.schema.names)
        frame = strings.to_pandas().fillna("")
        yield RawChunk(frame, first)
        first += len(frame)


def _header(handle: io.IOBase, compression: str | None) -> list[str]:
    stream = gzip.GzipFile(fileobj=handle) if compression == "gzip" else handle
    line = stream.readline().decode("utf-8-sig")
    return next(csv.reader([line]), [])


def _csv_chunks(handle: io.IOBase, compression: str | None, chunk_rows: int) -> Iterator[RawChunk]:
    names = _header(handle, compression)
    if not names:
        return
    handle.seek(0)
    malformed: list[tuple[int, str]] = []

    def keep_aside(row: pcsv.InvalidRow) -> str:
        malformed.append((row.number if row.number is not None else -1, row.text))
        return "skip"

    reader = pcsv.open_csv(
        pa.input_stream(handle, compression=compression),
        read_options=pcsv.ReadOptions(column_names=names, skip_rows=1,
                                      block_size=min(max(1 << 16, chunk_rows * 200), 1 << 28)),
        parse_options=pcsv.ParseOptions(invalid_row_handler=keep_aside),
        convert_options=pcsv.ConvertOptions(
            column_types={name: pa.string() for name in names},
            strings_can_be_null=False, quoted_strings_can_be_null=False),
    )
    first = 1
    for batch in reader:
        frame = batch.to_pandas()
        yield RawChunk(frame, first, malformed[:])
        first += len(frame)
        malformed.clear()
    if malformed:
        yield RawChunk(pd.DataFrame({name: pd.Series([], dtype="str") for name in names}),
                       first, malformed[:])
