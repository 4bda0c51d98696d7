"""One BEATs encoder layer: post-LayerNorm with deep-norm residual scaling.

x = norm1(alpha * x + attn(x)); x = norm2(alpha * x + fc2(gelu(fc1(x)))), alpha = (2 * depth) ** 0.25
with deep norm, 1 without.
"""

from __future__ import annotations

import torch
from torch import nn

from earshot_models.beats.attention import GatedRelPosAttention
from earshot_models.layers.mlp import Mlp


class BeatsLayer(nn.Module):
    def __init__(self, dim: int, num_heads: int, ffn_dim: int, gated: bool, alpha: float, layer_norm_eps: float):
        super().__init__()
        self.alpha = alpha
        self.attn = GatedRelPosAttention(dim, num_heads, gated)
        self.norm1 = nn.LayerNorm(dim, eps=layer_norm_eps)
        self.mlp = Mlp(dim, ffn_dim)  # fc1, exact GELU (fairseq's "gelu"), fc2
        self.norm2 = nn.LayerNorm(dim, eps=layer_norm_eps)

    def forward(self, x: torch.Tensor, position_bias: torch.Tensor | None, key_mask: torch.Tensor) -> torch.Tensor:
        x = self.norm1(self.attn(x, position_bias, key_mask) + x * self.alpha)  # (B, N, D)
        return self.norm2(self.mlp(x) + x * self.alpha)  # (B, N, D)
