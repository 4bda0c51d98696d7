"""An index directory on disk: what `earshot index` writes and `earshot serve --index` reads.

    <index>/
      index.json                 format "earshot-index/1": the model that embedded it, dim, metric,
                                 backend, vector count, the files of this generation, its sources
      vectors-<generation>.usearch   the vectors under keys 0..count-1
      paths-<generation>.parquet     one column `path`: row `key` is the catalog path of vector `key`

Each build writes a new generation's files, then replaces index.json (atomically), then removes
the previous generation's: an interrupted build leaves the last complete index as it was.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from earshot.search.backend import UsearchIndex

FORMAT = "earshot-index/1"
META_FILE = "index.json"
BACKEND = "usearch"
METRIC = "cosine"


class IndexDirectoryError(Exception):
    """An index directory that is missing, malformed, or does not fit what is asked of it."""


@dataclass(frozen=True)
class IndexMeta:
    name: str
    model: str  # the bundle name in the catalog's `model` column
    embedding_dim: int
    count: int
    generation: int
    scalar: str  # how the backend stores vectors: f32, f16, i8
    sources: list[dict[str, Any]] = field(default_factory=list)  # one entry per build
    backend: str = BACKEND
    metric: str = METRIC
    format: str = FORMAT

    @property
    def vectors_file(self) -> str:
        return f"vectors-{self.generation}.usearch"

    @property
    def paths_file(self) -> str:
        return f"paths-{self.generation}.parquet"

    @classmethod
    def from_json(cls, data: dict[str, Any], where: Path) -> IndexMeta:
        if data.get("format") != FORMAT:
            raise IndexDirectoryError(f"{where}: format {data.get('format')!r} is not {FORMAT!r}")
        try:
            meta = cls(**data)
        except TypeError as error:
            raise IndexDirectoryError(f"{where}: malformed index metadata: {error}") from error
        if meta.backend != BACKEND or meta.metric != METRIC:
            raise IndexDirectoryError(f"{where}: backend {meta.backend!r} / metric {meta.metric!r}; this earshot reads {BACKEND} / {METRIC}")
        return meta


@dataclass
class IndexDirectory:
    path: Path
    meta: IndexMeta
    vectors: UsearchIndex
    paths: pa.StringArray  # (count,): paths[key]

    @property
    def name(self) -> str:
        return self.meta.name


def read_meta(path: Path) -> IndexMeta:
    meta_path = path / META_FILE
    if not meta_path.is_file():
        raise IndexDirectoryError(f"{path}: not an index directory (no {META_FILE}); build one with `earshot index`")
    try:
        data = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise IndexDirectoryError(f"{meta_path}: unreadable: {error}") from error
    return IndexMeta.from_json(data, meta_path)


def open_index(path: str | os.PathLike[str], view: bool = True) -> IndexDirectory:
    """Read an index directory; view: memory-map the vectors read-only (serving)."""
    root = Path(path)
    meta = read_meta(root)
    vectors_path, paths_path = root / meta.vectors_file, root / meta.paths_file
    for needed in (vectors_path, paths_path):
        if not needed.is_file():
            raise IndexDirectoryError(f"{root}: {needed.name} is missing")
    try:
        vectors = UsearchIndex.open(vectors_path, view=view)
        paths = pq.read_table(paths_path, columns=["path"]).column("path").combine_chunks()
    except (OSError, ValueError, RuntimeError, KeyError, pa.ArrowException) as error:
        raise IndexDirectoryError(f"{root}: unreadable index files: {error}") from error
    if len(vectors) != meta.count or len(paths) != meta.count or vectors.dim != meta.embedding_dim:
        raise IndexDirectoryError(
            f"{root}: {len(vectors)} vectors of {vectors.dim} dimensions and {len(paths)} paths, but index.json says "
            f"{meta.count} of {meta.embedding_dim}; rebuild it with `earshot index ... --rebuild`"
        )
    return IndexDirectory(root, meta, vectors, paths)


def write_generation(root: Path, meta: IndexMeta, vectors: UsearchIndex, paths: list[str]) -> IndexMeta:
    """Write `vectors` and `paths` as the next generation, then point index.json at them."""
    root.mkdir(parents=True, exist_ok=True)
    previous = read_meta(root) if (root / META_FILE).is_file() else None
    generation = (previous.generation + 1) if previous else meta.generation
    new = replace(meta, generation=generation, count=len(paths))
    vectors.save(root / new.vectors_file)
    pq.write_table(pa.table({"path": pa.array(paths, type=pa.string())}), root / new.paths_file)
    temporary = root / (META_FILE + ".tmp")
    temporary.write_text(json.dumps(asdict(new), indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, root / META_FILE)
    if previous is not None:
        for name in (previous.vectors_file, previous.paths_file):
            (root / name).unlink(missing_ok=True)
    return new


def normalise(vectors: np.ndarray) -> np.ndarray:
    """(n, dim) -> unit rows (zero rows stay zero)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)
