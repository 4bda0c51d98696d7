"""Window outputs -> one clip's result: the one assembly every client of the engine shares.

The HTTP engine (its batcher returns a request's window outputs) and the Ray actors (which run
their files' windows themselves) both turn (n_windows, ...) outputs into a clip embedding, its top
tags and optional per-window results here, so a clip gets the same answer from either.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from earshot import bundle as bundle_format
from earshot.engine.pooling import Tag, pool, tag_scores, top_k, window_weights
from earshot.engine.runner import BatchOutput, Runner
from earshot.engine.segments import Segment, SegmentConfig, cells, find_segments
from earshot.engine.windows import Windows


@dataclass(frozen=True)
class WindowResult:
    start_s: float
    end_s: float
    embedding: np.ndarray  # (embedding_dim,) float32
    tags: list[Tag]


@dataclass(frozen=True)
class ClipFrames:
    """A clip's frame features on one grid: monotonic, contiguous cells covering the clip."""

    start_s: np.ndarray  # (n,) float64
    end_s: np.ndarray  # (n,) float64
    embedding: np.ndarray  # (n, frame_dim) float32


@dataclass(frozen=True)
class ClipResult:
    embedding: np.ndarray  # (embedding_dim,) float32: the window embeddings pooled (pooling: a short last window weighs its fresh samples)
    tags: list[Tag]  # top-k of the window tag scores pooled the same way, best first
    windows: list[WindowResult] | None  # per window, when asked for
    frames: ClipFrames | None = None  # when asked for, from a graph with frames
    segments: list[Segment] | None = None  # when asked for, from a graph with tags


def clip_frames(grid: bundle_format.FrameGrid, sample_rate: int, hop_samples: int, frames: np.ndarray,
                cut_windows: Windows) -> ClipFrames:
    """The frames (n_windows, count, dim) of a clip's windows, each window giving the cells that
    start within its hop (the last window: within the clip), so overlapping windows give each
    stretch of audio once, in time order. A cell that starts before the clip's end is kept."""
    starts: list[np.ndarray] = []
    rows: list[np.ndarray] = []
    n_windows = len(cut_windows)
    clip_end = float(cut_windows.start_s[-1] * sample_rate + cut_windows.num_samples[-1])  # samples
    for w in range(n_windows):
        window_start = int(round(cut_windows.start_s[w] * sample_rate))
        limit = window_start + hop_samples if w < n_windows - 1 else clip_end
        cell_starts = window_start + np.arange(grid.count) * grid.hop_samples  # (count,) samples
        keep = cell_starts < limit
        starts.append(cell_starts[keep])
        rows.append(frames[w][keep])
    start = np.concatenate(starts).astype(np.float64)
    end = np.minimum(start + grid.hop_samples, clip_end)
    return ClipFrames(start_s=start / sample_rate, end_s=end / sample_rate, embedding=np.concatenate(rows))


def assemble_clip(
    bundle: bundle_format.Bundle,
    embedding: np.ndarray,  # (n_windows, embedding_dim)
    logits: np.ndarray | None,  # (n_windows, num_labels), None without a tagging head
    cut_windows: Windows,
    k: int,
    with_windows: bool,
    labels: list[str] | None = None,  # the logits' labels when not the bundle's (zero-shot per request)
    activation: str | None = None,  # their activation when not the bundle's
    frames: np.ndarray | None = None,  # (n_windows, n_frames, frame_dim): the clip's frames, when asked for
    segments: SegmentConfig | None = None,  # sound events over time, when asked for
) -> ClipResult:
    labels = bundle.labels if labels is None else labels
    activation = bundle.manifest.tag_activation if activation is None else activation
    scores = tag_scores(logits, activation) if logits is not None else None  # (n, labels)
    per_window = None
    if with_windows:
        per_window = [
            WindowResult(
                start_s=float(cut_windows.start_s[i]),
                end_s=float(cut_windows.end_s[i]),
                embedding=embedding[i],
                tags=top_k(scores[i], labels, k) if scores is not None else [],
            )
            for i in range(len(cut_windows))
        ]
    manifest = bundle.manifest
    weights = window_weights(cut_windows.num_samples, manifest.window_samples, manifest.hop_samples)  # (n,)
    found = None
    if segments is not None and scores is not None:
        starts, ends = cells(cut_windows.start_s, manifest.hop_seconds, float(cut_windows.end_s[-1]))
        found = find_segments(scores, labels, starts, ends, segments)
    return ClipResult(
        embedding=pool(embedding, weights).astype(np.float32),
        tags=top_k(pool(scores, weights), labels, k) if scores is not None else [],
        windows=per_window,
        frames=(
            clip_frames(manifest.frame_grid, manifest.sample_rate, manifest.hop_samples, frames, cut_windows)
            if frames is not None and manifest.frame_grid is not None
            else None
        ),
        segments=found,
    )


def run_in_batches(runner: Runner, cut_windows: Windows, max_batch: int) -> BatchOutput:
    """One clip's windows through a runner directly (no batcher), max_batch windows per run."""
    embeddings, logits, frames = [], [], []
    for start in range(0, len(cut_windows), max_batch):
        stop = start + max_batch
        output = runner.run(cut_windows.samples[start:stop], cut_windows.num_samples[start:stop])
        embeddings.append(output.embedding)  # (batch, embedding_dim)
        if output.logits is not None:
            logits.append(output.logits)  # (batch, num_labels)
        if output.frames is not None:
            frames.append(output.frames)  # (batch, n_frames, frame_dim)
    return BatchOutput(
        np.concatenate(embeddings),
        np.concatenate(logits) if logits else None,
        np.concatenate(frames) if frames else None,
    )
