"""A catalog's Parquet (earshot embed) -> an index directory, incrementally.

Rows with an error or no embedding are skipped (and counted). A path already in the index keeps
its vector: re-running on a grown catalog adds only the new rows; `rebuild` starts from nothing
(after the catalog re-embedded changed files, or to change how vectors are stored). Every row's
model must be the index's: one index holds one model's embedding space.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from earshot.search.backend import UsearchIndex
from earshot.search.directory import (
    META_FILE,
    IndexDirectoryError,
    IndexMeta,
    normalise,
    open_index,
    write_generation,
)

COLUMNS = ("path", "model", "embedding", "error")
READ_BATCH_ROWS = 8192


@dataclass(frozen=True)
class BuildReport:
    index: Path
    model: str
    added: int
    already_indexed: int
    skipped_errors: int
    count: int  # vectors in the index now


def build_index(
    catalog: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    name: str | None = None,
    scalar: str = "f16",
    rebuild: bool = False,
) -> BuildReport:
    catalog_path, root = Path(catalog), Path(out)
    if not catalog_path.is_file():
        raise IndexDirectoryError(f"{catalog_path}: no such catalog file")
    try:
        source = pq.ParquetFile(catalog_path)
    except (OSError, pa.ArrowException) as error:
        raise IndexDirectoryError(f"{catalog_path}: not a readable Parquet file: {error}") from error
    missing = [column for column in COLUMNS if column not in source.schema_arrow.names]
    if missing:
        raise IndexDirectoryError(f"{catalog_path}: not an earshot catalog (no column {', '.join(missing)})")

    existing = None if rebuild or not (root / META_FILE).is_file() else open_index(root, view=False)
    if existing is None and root.exists() and any(root.iterdir()) and not (root / META_FILE).is_file():
        raise IndexDirectoryError(f"{root} exists and is not an index directory")
    indexed: set[str] = set(existing.paths.to_pylist()) if existing else set()
    paths: list[str] = list(existing.paths.to_pylist()) if existing else []
    vectors = existing.vectors if existing else None
    model = existing.meta.model if existing else None
    added = already = errors = 0
    for batch in source.iter_batches(batch_size=READ_BATCH_ROWS, columns=list(COLUMNS)):
        rows = batch.to_pydict()
        keep_paths: list[str] = []
        keep_vectors: list[list[float]] = []
        for path, row_model, embedding, row_error in zip(
            rows["path"], rows["model"], rows["embedding"], rows["error"], strict=True
        ):
            if row_error is not None or embedding is None:
                errors += 1
                continue
            if model is None:
                model = row_model
            elif row_model != model:
                raise IndexDirectoryError(
                    f"{catalog_path}: row {path!r} was embedded by {row_model!r}, the index holds {model!r}'s "
                    "embeddings; one index per model"
                )
            if path in indexed:
                already += 1
                continue
            indexed.add(path)
            keep_paths.append(path)
            keep_vectors.append(embedding)
        if not keep_paths:
            continue
        matrix = normalise(np.asarray(keep_vectors, dtype=np.float32))  # (n, dim)
        if vectors is None:
            vectors = UsearchIndex.create(matrix.shape[1], scalar)
        elif matrix.shape[1] != vectors.dim:
            raise IndexDirectoryError(f"{catalog_path}: {matrix.shape[1]}-dimensional embeddings, the index holds {vectors.dim}")
        vectors.add(np.arange(len(paths), len(paths) + len(keep_paths), dtype=np.uint64), matrix)
        paths.extend(keep_paths)
        added += len(keep_paths)
    if vectors is None or model is None:
        raise IndexDirectoryError(f"{catalog_path}: no row with an embedding ({errors} with errors); nothing to index")
    source_entry = {
        "catalog": str(catalog_path.resolve()),
        "added": added,
        "already_indexed": already,
        "skipped_errors": errors,
        "at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    if existing is not None and added == 0:  # nothing new: the index stays as it is
        return BuildReport(root, model, 0, already, errors, len(paths))
    if existing is not None:
        meta = existing.meta
        meta = IndexMeta(**{**meta.__dict__, "sources": [*meta.sources, source_entry]})
    else:
        meta = IndexMeta(
            name=name or root.name,
            model=model,
            embedding_dim=vectors.dim,
            count=len(paths),
            generation=0,
            scalar=vectors.scalar,
            sources=[source_entry],
        )
    if rebuild and (root / META_FILE).is_file():
        meta = IndexMeta(**{**meta.__dict__, "name": name or root.name})
    written = write_generation(root, meta, vectors, paths)
    return BuildReport(root, model, added, already, errors, written.count)
