"""The indexes a server serves, each tied to the model that embedded it (its `model`).

Loaded at start, memory-mapped; a search names a model (and an index, where that model has more
than one) and gives a unit-norm query vector of that model's space.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from earshot import metrics
from earshot.engine.errors import InvalidInput, UnknownIndex
from earshot.search.directory import IndexDirectory, IndexDirectoryError, normalise, open_index

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Hit:
    path: str
    score: float  # cosine similarity


class ServedIndexes:
    def __init__(self, indexes: Sequence[IndexDirectory]) -> None:
        self._by_name: dict[str, IndexDirectory] = {}
        for index in indexes:
            if index.name in self._by_name:
                raise IndexDirectoryError(f"two indexes are named {index.name!r} ({self._by_name[index.name].path}, {index.path})")
            self._by_name[index.name] = index
            metrics.INDEX_VECTORS.labels(index=index.name).set(index.meta.count)

    @classmethod
    def load(
        cls, paths: Sequence[str | os.PathLike[str]], model_dims: Callable[[str], int | None]
    ) -> ServedIndexes:
        """Open each index; model_dims(name) is the served model's embedding size (None: not served)."""
        opened = []
        for path in paths:
            index = open_index(path, view=True)
            dim = model_dims(index.meta.model)
            if dim is None:
                raise IndexDirectoryError(
                    f"index {index.name} ({path}) holds embeddings of model {index.meta.model!r}, which this server "
                    "does not serve; serve its bundle too (--bundle)"
                )
            if dim != index.meta.embedding_dim:
                raise IndexDirectoryError(
                    f"index {index.name}: {index.meta.embedding_dim}-dimensional vectors, model {index.meta.model} "
                    f"gives {dim}"
                )
            log.info("index %s: %d vectors of model %s", index.name, index.meta.count, index.meta.model)
            opened.append(index)
        return cls(opened)

    @property
    def names(self) -> list[str]:
        return list(self._by_name)

    def for_model(self, model: str, name: str | None) -> IndexDirectory:
        """The index to search for `model`: the one named, or its only one."""
        if name is not None:
            index = self._by_name.get(name)
            if index is None:
                raise UnknownIndex(f"no index {name!r}; this server has {', '.join(self._by_name) or 'none'}")
            if index.meta.model != model:
                raise InvalidInput(f"index {name} holds embeddings of model {index.meta.model}, not {model}")
            return index
        mine = [index for index in self._by_name.values() if index.meta.model == model]
        if not mine:
            raise UnknownIndex(
                f"no index of model {model}; this server has "
                + (", ".join(f"{i.name} ({i.meta.model})" for i in self._by_name.values()) or "none (serve with --index)")
            )
        if len(mine) > 1:
            raise InvalidInput(f"model {model} has {len(mine)} indexes ({', '.join(i.name for i in mine)}): name one")
        return mine[0]

    def search(self, index: IndexDirectory, query: np.ndarray, k: int) -> list[Hit]:
        """The k nearest paths to query (dim,), best first (fewer where the index holds fewer)."""
        vector = normalise(query.reshape(1, -1))
        keys, scores = index.vectors.search(vector, min(k, max(index.meta.count, 1)))
        metrics.SEARCHES.labels(index=index.name).inc()
        hits = []
        for key, score in zip(keys[0], scores[0], strict=True):
            if key < 0:
                break
            hits.append(Hit(path=str(index.paths[int(key)]), score=float(score)))
        return hits
