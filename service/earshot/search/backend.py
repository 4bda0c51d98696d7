"""The vector index behind search: an interface, and the embedded default (usearch's HNSW).

Everything above this module speaks `VectorIndex`: unit-norm float32 vectors under uint64 keys,
cosine scores back. A distributed engine (Qdrant, Milvus, pgvector; README, "Search") stands
behind the same four calls for catalogs past one machine: `add` is an upsert of (key, vector)
points, `search` a k-nearest query with cosine distance, `save`/`open` become the collection's
name. The index directory keeps the key -> path table and the metadata either way.

Why usearch (BENCHMARKS.md §6, loadtest/bench_search.py): HNSW with recall@10 above 0.95 at its
defaults, half-precision vectors (half the memory per million at the same recall at 512
dimensions), incremental `add`, a saved index opened memory-mapped (`view`) so a server starts at
once on a large index, and a small wheel with numpy as its only dependency.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

SCALARS = ("f32", "f16", "i8")
# HNSW's breadth when searching: 64 (usearch's default) gave recall@10 0.91-0.92 on 20k clustered
# 64-d vectors, 128 gives 0.97-0.98 at half the queries/s, 256 0.99+ (tests/service/test_search.py's
# set, measured here; BENCHMARKS.md §6: 512-d at 100k reaches 0.95 at 32 and 0.97 at 64)
EXPANSION_SEARCH = 128


class VectorIndex(Protocol):
    @property
    def dim(self) -> int: ...

    def __len__(self) -> int: ...

    def add(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        """keys (n,) uint64, new ones; vectors (n, dim) float32."""

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """queries (q, dim) -> (keys (q, k) int64, -1 past the end; scores (q, k) float32 cosine), best first."""

    def save(self, path: Path) -> None: ...


class UsearchIndex:
    """usearch HNSW, cosine metric, vectors stored as `scalar` (f32, f16 or i8)."""

    def __init__(self, index) -> None:
        self._index = index

    @classmethod
    def create(cls, dim: int, scalar: str = "f16", connectivity: int = 16, expansion_add: int = 128,
               expansion_search: int = EXPANSION_SEARCH) -> UsearchIndex:
        from usearch.index import Index

        if scalar not in SCALARS:
            raise ValueError(f"scalar must be one of {SCALARS}, got {scalar!r}")
        return cls(Index(ndim=dim, metric="cos", dtype=scalar, connectivity=connectivity,
                         expansion_add=expansion_add, expansion_search=expansion_search))

    @classmethod
    def open(cls, path: Path, view: bool, expansion_search: int = EXPANSION_SEARCH) -> UsearchIndex:
        """A saved index: memory-mapped read-only (view, for serving) or loaded to grow it."""
        from usearch.index import Index

        index = Index.restore(str(path), view=view)
        if index is None:
            raise ValueError(f"{path}: not a usearch index")
        index.expansion_search = expansion_search  # type: ignore[misc]  # usearch has the setter; its types omit it
        return cls(index)

    @property
    def dim(self) -> int:
        return int(self._index.ndim)

    @property
    def scalar(self) -> str:
        return str(self._index.dtype).rsplit(".", 1)[-1].lower()

    def __len__(self) -> int:
        return len(self._index)

    def add(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        if len(keys):
            self._index.add(np.ascontiguousarray(keys, dtype=np.uint64), np.ascontiguousarray(vectors, dtype=np.float32))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)  # (q, dim)
        found = self._index.search(queries, k)
        keys = np.full((len(queries), k), -1, dtype=np.int64)
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        got_keys = np.asarray(found.keys).reshape(len(queries), -1)
        got_distances = np.asarray(found.distances).reshape(len(queries), -1)
        # one query row gives usearch's Matches (no counts), more give BatchMatches
        counts = np.asarray(found.counts).reshape(-1) if hasattr(found, "counts") else np.array([len(found.keys)])
        for row, count in enumerate(counts):
            keys[row, :count] = got_keys[row, :count].astype(np.int64)
            scores[row, :count] = 1.0 - got_distances[row, :count]  # usearch's cos metric is 1 - cosine
        return keys, scores

    def save(self, path: Path) -> None:
        self._index.save(str(path))
