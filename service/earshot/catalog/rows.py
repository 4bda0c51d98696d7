"""One catalog row per input file, in the layout of `table.catalog_schema`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from earshot.catalog.decoding import DecodedFile
from earshot.engine.assembly import ClipFrames
from earshot.engine.pooling import Tag
from earshot.engine.segments import Segment


def success_row(
    decoded: DecodedFile,
    model: str,
    embedding: np.ndarray,  # (embedding_dim,)
    tags: Sequence[Tag],
    windows: Sequence[tuple[float, float, np.ndarray]] | None,  # (start_s, end_s, embedding) each
    with_windows: bool,
    frames: ClipFrames | None = None,  # with --frames
    with_frames: bool = False,
    segments: Sequence[Segment] | None = None,  # with --segments
    with_segments: bool = False,
) -> dict[str, Any]:
    row = _base(decoded, model)
    row["embedding"] = np.asarray(embedding, dtype=np.float32)
    row["tags"] = [{"label": tag.label, "score": float(tag.score)} for tag in tags]
    if with_windows:
        row["windows"] = [
            {"start_s": float(start), "end_s": float(end), "embedding": np.asarray(vector, dtype=np.float32)}
            for start, end, vector in windows or []
        ]
    if with_frames:
        row["frames"] = [] if frames is None else [
            {"start_s": start, "end_s": end, "embedding": vector}
            for start, end, vector in zip(frames.start_s.tolist(), frames.end_s.tolist(), frames.embedding, strict=True)
        ]
    if with_segments:
        row["segments"] = [
            {"label": s.label, "start_s": s.start_s, "end_s": s.end_s, "score": s.score} for s in segments or []
        ]
    return row


def error_row(
    decoded: DecodedFile, model: str, error: str, with_windows: bool, with_frames: bool = False,
    with_segments: bool = False,
) -> dict[str, Any]:
    row = _base(decoded, model)
    row.update(embedding=None, tags=None, error=error)
    if with_windows:
        row["windows"] = None
    if with_frames:
        row["frames"] = None
    if with_segments:
        row["segments"] = None
    return row


def _base(decoded: DecodedFile, model: str) -> dict[str, Any]:
    return {
        "path": decoded.path,
        "size_bytes": decoded.size_bytes,
        "mtime_ns": decoded.mtime_ns,
        "duration_s": decoded.duration_s,
        "sample_rate": decoded.sample_rate,
        "model": model,
        "error": decoded.error,
    }
