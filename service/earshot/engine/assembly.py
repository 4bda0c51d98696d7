"""Window outputs -> one clip's result: the one assembly every client of the engine shares.

The HTTP engine (its batcher returns a request's window outputs) and the Ray actors (which run
their files' windows themselves) both turn (n_windows, ...) outputs into a clip embedding, its top
tags and optional per-window results here, so a clip gets the same answer from either.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from earshot import bundle as bundle_format
from earshot.engine.pooling import Tag, mean_pool, tag_scores, top_k
from earshot.engine.runner import BatchOutput, Runner
from earshot.engine.windows import Windows


@dataclass(frozen=True)
class WindowResult:
    start_s: float
    end_s: float
    embedding: np.ndarray  # (embedding_dim,) float32
    tags: list[Tag]


@dataclass(frozen=True)
class ClipResult:
    embedding: np.ndarray  # (embedding_dim,) float32: the mean of the window embeddings
    tags: list[Tag]  # top-k of the mean window tag scores, best first
    windows: list[WindowResult] | None  # per window, when asked for


def assemble_clip(
    bundle: bundle_format.Bundle,
    embedding: np.ndarray,  # (n_windows, embedding_dim)
    logits: np.ndarray | None,  # (n_windows, num_labels), None without a tagging head
    cut_windows: Windows,
    k: int,
    with_windows: bool,
    labels: list[str] | None = None,  # the logits' labels when not the bundle's (zero-shot per request)
    activation: str | None = None,  # their activation when not the bundle's
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
    return ClipResult(
        embedding=mean_pool(embedding).astype(np.float32),
        tags=top_k(mean_pool(scores), labels, k) if scores is not None else [],
        windows=per_window,
    )


def run_in_batches(runner: Runner, cut_windows: Windows, max_batch: int) -> BatchOutput:
    """One clip's windows through a runner directly (no batcher), max_batch windows per run."""
    embeddings, logits = [], []
    for start in range(0, len(cut_windows), max_batch):
        stop = start + max_batch
        output = runner.run(cut_windows.samples[start:stop], cut_windows.num_samples[start:stop])
        embeddings.append(output.embedding)  # (batch, embedding_dim)
        if output.logits is not None:
            logits.append(output.logits)  # (batch, num_labels)
    return BatchOutput(np.concatenate(embeddings), np.concatenate(logits) if logits else None)
