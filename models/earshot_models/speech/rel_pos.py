"""WavLM's bucketed relative position bias (T5-style, bidirectional), for any number of frames.

Distance d = key index - query index. Half the buckets are for d > 0, half for d <= 0; in each half
the first `half // 2` distances get a bucket each, larger ones share logarithmically spaced buckets
up to `max_distance`, and everything from there on shares the last one. The bucket depends on d
alone and is constant past +-max_distance, so it is computed once, for d in [-max_distance,
max_distance], in float32 torch with transformers' WavLMAttention._relative_positions_bucket
expression (max_exact added before the truncation, as transformers does; the original WavLM adds
it after, which gives the same buckets unless a value lands within float rounding of an integer),
and kept as a table. At run time the (T, T) bucket matrix is integer arithmetic and one gather, so
the graph works for any window and no float boundary can move under another runtime's `Log`.

transformers computes the bias in layer 0 (which alone holds `rel_attn_embed`) and hands the same
ungated bias to every later layer, each of which gates it with its own gate (attention.py).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def relative_position_bucket(distance: torch.Tensor, num_buckets: int, max_distance: int) -> torch.Tensor:
    """distance (...) int64 (key - query) -> bucket (...) int64, transformers' WavLM rule."""
    half = num_buckets // 2
    buckets = (distance > 0).to(torch.int64) * half
    distance = distance.abs()
    max_exact = half // 2
    is_small = distance < max_exact
    # clamp(min=1): log(0) is only ever on the small branch; keep it finite
    large = torch.log(distance.clamp(min=1).float() / max_exact)
    large = large / math.log(max_distance / max_exact)
    large = large * (half - max_exact)
    large = (max_exact + large).to(torch.int64)
    large = torch.clamp(large, max=half - 1)
    return buckets + torch.where(is_small, distance, large)


class RelativePositionBias(nn.Module):
    """num_frames T -> bias (1, heads, T, T); the learned table (num_buckets, heads) is the only weight."""

    distance_buckets: torch.Tensor  # (2 * max_distance + 1,) int64, a non-persistent buffer

    def __init__(self, num_buckets: int, max_distance: int, num_heads: int):
        super().__init__()
        self.max_distance = max_distance
        self.embedding = nn.Embedding(num_buckets, num_heads)  # (buckets, H): WavLM's rel_attn_embed
        distance = torch.arange(-max_distance, max_distance + 1, dtype=torch.int64)  # (2 * max_distance + 1,)
        table = relative_position_bucket(distance, num_buckets, max_distance)
        self.register_buffer("distance_buckets", table, persistent=False)  # bucket of d at index d + max_distance

    def buckets(self, num_frames: int) -> torch.Tensor:
        """(T, T) int64: the bucket of every (query, key) pair."""
        position = torch.arange(num_frames, dtype=torch.int64, device=self.distance_buckets.device)  # (T,)
        distance = position[None, :] - position[:, None]  # (T, T): key - query
        index = distance.clamp(-self.max_distance, self.max_distance) + self.max_distance  # (T, T)
        return self.distance_buckets[index]  # (T, T)

    def forward(self, num_frames: int) -> torch.Tensor:
        values = self.embedding(self.buckets(num_frames))  # (T, T, H)
        return values.permute(2, 0, 1).unsqueeze(0)  # (1, H, T, T)
