"""The catalog's Parquet table: its schema, crash-safe writing as the job goes, and resuming.

While a job runs, rows go into complete Parquet files in `<out>.parts/` (each written under a
temporary name, then renamed), so a crash loses at most the rows not yet flushed. At the end,
`compact` merges the previous output and every part into `<out>` (one row per path, the newest
wins), streaming row groups, and removes the parts. `--resume` reads the paths already done from
both places, so a job killed at any point resumes without duplicates.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

ROW_GROUP_ROWS = 4096


class TableError(ValueError):
    """An existing output that cannot be resumed (another model, another layout, unreadable)."""


def catalog_schema(
    embedding_dim: int, with_windows: bool, frame_dim: int | None = None, with_segments: bool = False
) -> pa.Schema:
    """frame_dim: with --frames, a `frames` column of {start_s, end_s, embedding} per frame;
    with_segments: a `segments` column of {label, start_s, end_s, score}."""
    embedding = pa.list_(pa.float32(), embedding_dim)
    tag = pa.struct([("label", pa.string()), ("score", pa.float32())])
    fields = [
        pa.field("path", pa.string(), nullable=False),
        pa.field("size_bytes", pa.int64()),
        pa.field("mtime_ns", pa.int64()),
        pa.field("duration_s", pa.float64()),
        pa.field("sample_rate", pa.int32()),  # of the file as found, before resampling
        pa.field("model", pa.string(), nullable=False),
        pa.field("embedding", embedding),
        pa.field("tags", pa.list_(tag)),
    ]
    if with_windows:
        window = pa.struct([("start_s", pa.float64()), ("end_s", pa.float64()), ("embedding", embedding)])
        fields.append(pa.field("windows", pa.list_(window)))
    if frame_dim is not None:
        cell = pa.struct([("start_s", pa.float64()), ("end_s", pa.float64()), ("embedding", pa.list_(pa.float32(), frame_dim))])
        fields.append(pa.field("frames", pa.list_(cell)))
    if with_segments:
        segment = pa.struct([("label", pa.string()), ("start_s", pa.float64()), ("end_s", pa.float64()),
                             ("score", pa.float32())])
        fields.append(pa.field("segments", pa.list_(segment)))
    fields.append(pa.field("error", pa.string()))
    return pa.schema(fields)


def parts_dir(out: Path) -> Path:
    return out.with_name(out.name + ".parts")


@dataclass(frozen=True)
class DoneFile:
    size_bytes: int | None
    mtime_ns: int | None
    failed: bool


def _sources(out: Path) -> list[Path]:
    parts = sorted(parts_dir(out).glob("part-*.parquet")) if parts_dir(out).is_dir() else []
    return ([out] if out.is_file() else []) + parts


def check_resumable(out: Path, schema: pa.Schema) -> None:
    for source in _sources(out):
        try:
            found = pq.read_schema(source)
        except (OSError, pa.ArrowInvalid) as error:
            raise TableError(f"{source}: cannot read the existing output to resume: {error}") from error
        if not found.equals(schema, check_metadata=False):
            raise TableError(
                f"{source}: the existing output has another layout (another model, embedding size or "
                "--windows setting); write to a new --out instead of resuming"
            )


def done_files(out: Path, model: str) -> dict[str, DoneFile]:
    """Rows already written for `model`, by path (the newest row of a path wins)."""
    done: dict[str, DoneFile] = {}
    for source in _sources(out):
        columns = pq.read_table(source, columns=["path", "size_bytes", "mtime_ns", "model", "error"]).to_pylist()
        for row in columns:
            if row["model"] != model:
                raise TableError(f"{source}: rows of model {row['model']!r}, not {model!r}; use a new --out")
            done[row["path"]] = DoneFile(row["size_bytes"], row["mtime_ns"], row["error"] is not None)
    return done


class PartWriter:
    """Appends rows as numbered, complete Parquet part files next to the output."""

    def __init__(self, out: Path, schema: pa.Schema):
        self.directory = parts_dir(out)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.schema = schema
        existing = sorted(self.directory.glob("part-*.parquet"))
        self.next_index = int(existing[-1].stem.split("-")[1]) + 1 if existing else 0

    def write(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        table = pa.Table.from_pylist(rows, schema=self.schema)
        final = self.directory / f"part-{self.next_index:06d}.parquet"
        temporary = final.with_suffix(".tmp")
        pq.write_table(table, temporary, row_group_size=ROW_GROUP_ROWS)
        os.replace(temporary, final)
        self.next_index += 1


def discard_parts(out: Path) -> None:
    if parts_dir(out).is_dir():
        shutil.rmtree(parts_dir(out))


def compact(out: Path, schema: pa.Schema) -> int:
    """Merge the previous output and all parts into `out`, one row per path; returns the row count."""
    sources = _sources(out)
    keep = _newest_rows(sources)
    temporary = out.with_name("." + out.name + ".compacting")
    rows = 0
    with pq.ParquetWriter(temporary, schema) as writer:
        for source, mask in zip(sources, keep, strict=True):
            for batch in _filtered_batches(source, mask):
                writer.write_batch(batch, row_group_size=ROW_GROUP_ROWS)
                rows += batch.num_rows
    os.replace(temporary, out)
    discard_parts(out)
    return rows


def _newest_rows(sources: list[Path]) -> list[list[bool]]:
    """For each source, which of its rows is the last one written for its path."""
    last: dict[str, tuple[int, int]] = {}
    lengths = []
    for source_index, source in enumerate(sources):
        paths = pq.read_table(source, columns=["path"]).column("path").to_pylist()
        lengths.append(len(paths))
        for row_index, path in enumerate(paths):
            last[path] = (source_index, row_index)
    masks = [[False] * length for length in lengths]
    for source_index, row_index in last.values():
        masks[source_index][row_index] = True
    return masks


def _filtered_batches(source: Path, mask: list[bool]) -> Iterable[pa.RecordBatch]:
    offset = 0
    for batch in pq.ParquetFile(source).iter_batches(batch_size=ROW_GROUP_ROWS):
        selection = pa.array(mask[offset : offset + batch.num_rows])
        offset += batch.num_rows
        filtered = batch.filter(selection)
        if filtered.num_rows:
            yield filtered
