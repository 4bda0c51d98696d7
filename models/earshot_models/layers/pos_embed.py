"""Absolute position embeddings, added to the token sequence [prefix tokens, patch tokens]."""

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


class FreqTimePositionEmbedding(nn.Module):
    """PaSST's separate tables: patch (f, t) gets freq[f] + time[t], the prefix tokens their own rows.

    The time table holds the columns of the longest input the model was built for; a shorter
    input uses its first `time_patches` columns (cut, not interpolated). Patch tokens are
    mel-major (index f * T' + t). With constant tables the whole sum folds into one constant at
    export, so the graph adds one table, as for a learned one.
    """

    def __init__(self, num_prefix: int, freq_patches: int, time_table: int, time_patches: int, embed_dim: int):
        super().__init__()
        if time_patches > time_table:
            raise ValueError(f"{time_patches} time patches, but the table holds {time_table}")
        self.time_patches = time_patches
        self.prefix = nn.Parameter(torch.zeros(1, num_prefix, embed_dim))  # (1, P, D)
        self.freq = nn.Parameter(torch.zeros(1, embed_dim, freq_patches, 1))  # (1, D, F', 1)
        self.time = nn.Parameter(torch.zeros(1, embed_dim, 1, time_table))  # (1, D, 1, T_table)

    def table(self) -> torch.Tensor:
        grid = self.freq + self.time[..., : self.time_patches]  # (1, D, F', T'): the first T' columns
        grid = grid.flatten(2).transpose(1, 2)  # (1, F' * T', D), mel-major
        return torch.cat([self.prefix, grid], dim=1)  # (1, P + F' * T', D)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens + self.table()  # (B, P + F' * T', D)
