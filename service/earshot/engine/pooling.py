"""From window outputs to a clip's answer: tag scores, pooling over windows, top-k labels."""

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


def mean_pool(values: np.ndarray) -> np.ndarray:
    """(n_windows, dim) -> (dim,): the clip's value is the mean over its windows."""
    return values.mean(axis=0)


def top_k(scores: np.ndarray, labels: list[str], k: int) -> list[Tag]:
    """scores (num_labels,) -> the k best labels, best first (ties keep label order)."""
    k = min(k, scores.shape[0])
    if k <= 0:
        return []
    order = np.argsort(-scores, kind="stable")[:k]
    return [Tag(label=labels[i] if i < len(labels) else str(i), score=float(scores[i])) for i in order]
