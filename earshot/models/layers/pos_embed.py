"""Learned absolute position embedding: one table added to every token."""

from __future__ import annotations

import torch
from torch import nn


class LearnedPositionEmbedding(nn.Module):
    """tokens (B, N, D) -> tokens + table, table (1, N, D). The sequence length is fixed."""

    def __init__(self, num_tokens: int, embed_dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1, num_tokens, embed_dim))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens + self.weight  # (B, N, D)
