"""Post-LayerNorm transformer block (BERT's, and data2vec 2.0's with layer_norm_first=False):
x = norm1(x + attn(x)), then x = norm2(x + mlp(x))."""

from __future__ import annotations

import torch
from torch import nn

from earshot_models.layers.attention import Attention
from earshot_models.layers.mlp import Mlp


class PostNormBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_hidden_dim: int, qkv_bias: bool, layer_norm_eps: float):
        super().__init__()
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm1 = nn.LayerNorm(dim, eps=layer_norm_eps)
        self.mlp = Mlp(dim, mlp_hidden_dim)
        self.norm2 = nn.LayerNorm(dim, eps=layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Branch first, residual second, as in Block: the form ONNX Runtime's attention fusion follows.
        x = self.norm1(self.attn(x) + x)  # (B, N, D)
        return self.norm2(self.mlp(x) + x)  # (B, N, D)
