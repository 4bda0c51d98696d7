"""From window outputs to a clip's answer: tag scores, pooling over windows, top-k labels.

Pooling rule: a clip's value is a weighted mean of its windows' values. Each window but the first
brings a fresh stretch of audio that no earlier window held (its last min(hop, window) samples); its
weight is the real (not padded) fraction of that stretch. Every window but a clip's last is whole,
weight 1, so a clip that ends on a whole hop, or has one window, gets the plain mean the reference
pipelines take. A last window that reaches a few samples past the one before it and is zeros after
them weighs those samples only: appending a few milliseconds to a clip moves its embedding by a few
milliseconds' worth, not by a whole window's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Tag:
    label: str
    score: float


def tag_scores(logits: np.ndarray, activation: str) -> np.ndarray:
    """logits (n_windows, num_labels) -> scores (n_windows, num_labels), per the manifest's activation."""
    logits = logits.astype(np.float64)
    if activation == "sigmoid":
        return 1.0 / (1.0 + np.exp(-logits))
    if activation == "softmax":
        shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return shifted / shifted.sum(axis=-1, keepdims=True)
    if activation == "none":
        return logits
    raise ValueError(f"unknown tag activation {activation!r}")


def window_weights(real_samples: np.ndarray, window_samples: int, hop_samples: int) -> np.ndarray:
    """real_samples (n_windows,): real samples at the start of each window's own span -> (n_windows,)
    float64 weights in (0, 1], by the module's pooling rule."""
    fresh = min(hop_samples, window_samples)  # samples of a window that the window before it lacks
    real = np.asarray(real_samples, dtype=np.float64)  # (n_windows,)
    weights = np.clip(real - (window_samples - fresh), 0.0, fresh) / fresh  # (n_windows,)
    weights[0] = 1.0  # the first window's every real sample is fresh
    return weights


def pool(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """values (n_windows, dim), weights (n_windows,) -> (dim,): the weighted mean, float64 accumulation."""
    weights = np.asarray(weights, dtype=np.float64)  # (n_windows,)
    if weights.shape != values.shape[:1] or not np.all(weights > 0):
        raise ValueError(f"need one positive weight per window, got {weights} for {values.shape[0]} windows")
    return (weights @ values.astype(np.float64)) / weights.sum()


def top_k(scores: np.ndarray, labels: list[str], k: int) -> list[Tag]:
    """scores (num_labels,) -> the k best labels, best first (ties keep label order)."""
    k = min(k, scores.shape[0])
    if k <= 0:
        return []
    order = np.argsort(-scores, kind="stable")[:k]
    return [Tag(label=labels[i] if i < len(labels) else str(i), score=float(scores[i])) for i in order]
