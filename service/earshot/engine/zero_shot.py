"""Zero-shot tags over labels a request chooses (CLAP): label prompts -> text embeddings (cached) ->
per window, logit_scale * cos(window, prompt), scored with a softmax over the labels.

That is CLAP's own scoring: transformers' `logits_per_audio` = exp(logit_scale_a) * the cosine of
the normalised audio and text embeddings; softmax over the label set. A clip's tags are the mean
of its windows' scores, as for a bundle's trained or export-time labels (assembly.py).
"""

from __future__ import annotations

import collections

import numpy as np

from earshot import metrics


def zero_shot_logits(window_embedding: np.ndarray, label_embedding: np.ndarray, logit_scale: float) -> np.ndarray:
    """window_embedding (n, P), label_embedding (C, P) -> logits (n, C) = logit_scale * cosine."""
    windows = window_embedding.astype(np.float64)
    windows /= np.maximum(np.linalg.norm(windows, axis=1, keepdims=True), 1e-12)
    labels = label_embedding.astype(np.float64)
    labels /= np.maximum(np.linalg.norm(labels, axis=1, keepdims=True), 1e-12)
    return (logit_scale * windows @ labels.T).astype(np.float32)  # (n, C)


def prompts_for(labels: list[str], prompt: str) -> list[str]:
    """Each label in the template (one '{}'), as the text tower embeds it."""
    return [prompt.replace("{}", label, 1) for label in labels]


class LabelCache:
    """Text embeddings of prompts, least recently used out first, at most `capacity` of them."""

    def __init__(self, model: str, capacity: int) -> None:
        self.capacity = capacity
        self._entries: collections.OrderedDict[str, np.ndarray] = collections.OrderedDict()
        self._hits = metrics.LABEL_CACHE.labels(model=model, result="hit")
        self._misses = metrics.LABEL_CACHE.labels(model=model, result="miss")

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, prompts: list[str]) -> tuple[dict[str, np.ndarray], list[str]]:
        """(found prompt -> (P,) embedding, the distinct prompts not cached, in first-seen order)."""
        found: dict[str, np.ndarray] = {}
        missing: list[str] = []
        for prompt in prompts:
            if prompt in found or prompt in missing:
                continue
            embedding = self._entries.get(prompt)
            if embedding is None:
                missing.append(prompt)
                self._misses.inc()
            else:
                self._entries.move_to_end(prompt)
                found[prompt] = embedding
                self._hits.inc()
        return found, missing

    def store(self, prompts: list[str], embeddings: np.ndarray) -> None:
        if self.capacity <= 0:
            return
        for prompt, embedding in zip(prompts, embeddings, strict=True):
            self._entries[prompt] = embedding
            self._entries.move_to_end(prompt)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
