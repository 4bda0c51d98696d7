"""Self-attention with BEATs' gated relative position bias, as one additive term.

scores = q k^T / sqrt(head_dim) + gate(q) * position_bias + key_mask
  gate(q) (B, H, N, 1): sigmoid of a small Linear(head_dim -> 8) of each head's (unscaled) query,
    summed in two groups of 4 -> (a, b); gate = a * (b * grep_a[h] - 1) + 2 (BEATs' `gru_rel_pos`)
  position_bias (1, H, N, N): from RelativePositionBias, shared by every layer
  key_mask (B, 1, 1, N): 0 for real tokens, -inf for padding
(The reference scales q by 1/(32 sqrt(hd)), subtracts the row maximum and multiplies by 32 to
keep fp16 training stable; softmax is invariant to both.)

In PyTorch the product runs through scaled_dot_product_attention with that additive mask (fused
kernels where the device has them). Under ONNX export it is written as plain MatMul, Add, Softmax,
MatMul, which ONNX Runtime runs (and fuses) on every provider.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

GATE_GROUPS = 2  # the gate Linear's 8 outputs are summed in 2 groups of 4: (a, b)
GATE_WIDTH = 8


class GatedRelPosAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, gated: bool):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)  # rows [q; k; v], each head-major
        self.proj = nn.Linear(dim, dim)
        self.gated = gated
        if gated:
            self.gate = nn.Linear(self.head_dim, GATE_WIDTH)
            self.gate_a = nn.Parameter(torch.ones(1, num_heads, 1, 1))  # (1, H, 1, 1): BEATs' grep_a

    def _split_heads(self, x: torch.Tensor, part: int) -> torch.Tensor:
        """x (B, N, D) -> part (0: q, 1: k, 2: v) projected and split, (B, H, N, hd)."""
        rows = slice(part * self.dim, (part + 1) * self.dim)  # Python ints: folded at export
        y = F.linear(x, self.qkv.weight[rows], self.qkv.bias[rows])  # (B, N, D)
        return y.reshape(y.shape[0], y.shape[1], self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, N, hd)

    def attention_bias(self, q: torch.Tensor, position_bias: torch.Tensor | None, key_mask: torch.Tensor) -> torch.Tensor:
        """q (B, H, N, hd), position_bias (1, H, N, N) | None, key_mask (B, 1, 1, N) -> (B, H, N, N) or (B, 1, 1, N)."""
        if position_bias is None:
            return key_mask
        if self.gated:
            groups = self.gate(q).reshape(*q.shape[:3], GATE_GROUPS, GATE_WIDTH // GATE_GROUPS)  # (B, H, N, 2, 4)
            gate_a, gate_b = torch.sigmoid(groups.sum(dim=-1)).chunk(2, dim=-1)  # (B, H, N, 1) each
            gate = gate_a * (gate_b * self.gate_a - 1.0) + 2.0  # (B, H, N, 1)
            position_bias = gate * position_bias  # (B, H, N, N)
        return position_bias + key_mask  # (B, H, N, N)

    def forward(self, x: torch.Tensor, position_bias: torch.Tensor | None, key_mask: torch.Tensor) -> torch.Tensor:
        """x (B, N, D), position_bias (1, H, N, N) | None, key_mask (B, 1, 1, N) additive -> (B, N, D)."""
        q, k, v = (self._split_heads(x, part) for part in range(3))  # (B, H, N, hd) each
        bias = self.attention_bias(q, position_bias, key_mask)
        if torch.onnx.is_in_onnx_export():
            scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(self.head_dim) + bias  # (B, H, N, N)
            out = torch.matmul(scores.softmax(dim=-1), v)  # (B, H, N, hd)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (B, H, N, hd)
        out = out.transpose(1, 2)  # (B, N, H, hd)
        return self.proj(out.reshape(out.shape[0], out.shape[1], self.dim))  # (B, N, D)
