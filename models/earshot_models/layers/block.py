"""Pre-LayerNorm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

from __future__ import annotations

import torch
from torch import nn

from earshot_models.layers.attention import Attention
from earshot_models.layers.mlp import Mlp


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_hidden_dim: int, qkv_bias: bool, layer_norm_eps: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=layer_norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=layer_norm_eps)
        self.mlp = Mlp(dim, mlp_hidden_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Branch first, residual second: in the exported graph the first block's residual comes from
        # an Add (the position embedding), and ONNX Runtime's attention fusion follows the first Add
        # input it finds. The sums are the same either way.
        x = self.attn(self.norm1(x)) + x  # (B, N, D)
        return self.mlp(self.norm2(x)) + x  # (B, N, D)
