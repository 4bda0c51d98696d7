"""BEATs' bucketed relative position bias (T5-style, bidirectional), for a fixed token count.

Distance d = key index - query index. Half the buckets are for d > 0, half for d <= 0; in each
half the first `half // 2` distances get a bucket each, larger ones share logarithmically spaced
buckets up to `max_distance`, and everything beyond shares the last. The bucket of each
(query, key) pair depends only on the token count, which a bundle fixes: it is computed once
(in float32 torch, the reference's arithmetic, so that no boundary lands in another bucket) and
kept as a buffer; the learned table (num_buckets, heads) is the only weight.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def relative_position_buckets(num_tokens: int, num_buckets: int, max_distance: int) -> torch.Tensor:
    """(num_tokens, num_tokens) int64: the bucket of every (query, key) pair."""
    position = torch.arange(num_tokens, dtype=torch.int64)
    distance = position[None, :] - position[:, None]  # (N, N): key - query
    half = num_buckets // 2
    buckets = (distance > 0).to(torch.int64) * half
    distance = distance.abs()
    max_exact = half // 2
    is_small = distance < max_exact
    # float32 log, truncated towards zero as in the reference; clamped to 1 where the small branch is taken
    large = max_exact + (
        torch.log(distance.clamp(min=1).float() / max_exact) / math.log(max_distance / max_exact) * (half - max_exact)
    ).to(torch.int64)
    large = torch.clamp(large, max=half - 1)
    return buckets + torch.where(is_small, distance, large)  # (N, N)


class RelativePositionBias(nn.Module):
    """() -> bias (1, heads, N, N) for the fixed token count N."""

    def __init__(self, num_tokens: int, num_buckets: int, max_distance: int, num_heads: int):
        super().__init__()
        self.embedding = nn.Embedding(num_buckets, num_heads)  # (buckets, H)
        buckets = relative_position_buckets(num_tokens, num_buckets, max_distance)
        self.register_buffer("buckets", buckets, persistent=False)  # (N, N)

    def forward(self) -> torch.Tensor:
        values = self.embedding(self.buckets)  # (N, N, H)
        return values.permute(2, 0, 1).unsqueeze(0)  # (1, H, N, N)
