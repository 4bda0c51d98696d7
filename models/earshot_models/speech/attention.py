"""Self-attention with WavLM's gated relative position bias, as one additive term.

scores = q k^T / sqrt(head_dim) + gate(x) * position_bias
  gate(x) (B, H, T, 1): from the attention's *input* x (not the projected query, unlike BEATs),
    split into heads (B, H, T, hd) -> Linear(hd -> 8) -> summed in two groups of 4 -> sigmoid ->
    (a, b); gate = a * (b * gate_const[h] - 1) + 2 (WavLM's gru_rel_pos_linear, gru_rel_pos_const)
  position_bias (1, H, T, T): from RelativePositionBias, the same for every layer

The other families' attention has no bias: they use the shared earshot_models.layers.attention.

In PyTorch the product runs through scaled_dot_product_attention with the bias as its additive
mask. Under ONNX export it is written as plain MatMul, Add, Softmax, MatMul.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

GATE_GROUPS = 2  # the gate Linear's 8 outputs are summed in 2 groups of 4: (a, b)
GATE_WIDTH = 8


class GatedRelPosAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)  # rows [q; k; v], each head-major
        self.proj = nn.Linear(dim, dim)
        self.gate = nn.Linear(self.head_dim, GATE_WIDTH)
        self.gate_const = nn.Parameter(torch.ones(1, num_heads, 1, 1))  # (1, H, 1, 1)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, H, T, hd)."""
        return x.reshape(x.shape[0], x.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

    def _split_heads(self, x: torch.Tensor, part: int) -> torch.Tensor:
        """x (B, T, D) -> part (0: q, 1: k, 2: v) projected and split, (B, H, T, hd)."""
        rows = slice(part * self.dim, (part + 1) * self.dim)  # Python ints: folded at export
        return self._heads(F.linear(x, self.qkv.weight[rows], self.qkv.bias[rows]))

    def gated_bias(self, x: torch.Tensor, position_bias: torch.Tensor) -> torch.Tensor:
        """x (B, T, D), position_bias (1, H, T, T) -> gate(x) * position_bias (B, H, T, T)."""
        heads = self._heads(x)  # (B, H, T, hd)
        groups = self.gate(heads).reshape(*heads.shape[:3], GATE_GROUPS, GATE_WIDTH // GATE_GROUPS)  # (B, H, T, 2, 4)
        gate_a, gate_b = torch.sigmoid(groups.sum(dim=-1)).chunk(2, dim=-1)  # (B, H, T, 1) each
        gate = gate_a * (gate_b * self.gate_const - 1.0) + 2.0  # (B, H, T, 1)
        return gate * position_bias  # (B, H, T, T)

    def forward(self, x: torch.Tensor, position_bias: torch.Tensor) -> torch.Tensor:
        """x (B, T, D), position_bias (1, H, T, T) -> (B, T, D)."""
        q, k, v = (self._split_heads(x, part) for part in range(3))  # (B, H, T, hd) each
        bias = self.gated_bias(x, position_bias)  # (B, H, T, T)
        if torch.onnx.is_in_onnx_export():
            scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(self.head_dim) + bias  # (B, H, T, T)
            out = torch.matmul(scores.softmax(dim=-1), v)  # (B, H, T, hd)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (B, H, T, hd)
        out = out.transpose(1, 2)  # (B, T, H, hd)
        return self.proj(out.reshape(out.shape[0], out.shape[1], self.dim))  # (B, T, D)
