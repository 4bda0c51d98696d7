"""Multi-head self-attention with a fused qkv projection.

In PyTorch the product goes through torch.nn.functional.scaled_dot_product_attention, which picks
fused kernels on CUDA (flash / memory-efficient). Under ONNX export it is written out as the
pattern ONNX Runtime's transformer optimizer fuses into one Attention op: q, k and v as three
MatMul + Add (the qkv weight cut by constant slices, which constant folding turns into three
initializers), Reshape, Transpose, MatMul(q, k^T), Div by sqrt(head_dim), Softmax, MatMul with v.
The legacy exporter's own SDPA symbolic (Mul by sqrt(scale) on q and k) is not a pattern it fuses.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)  # rows: [q; k; v], each head-major
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.onnx.is_in_onnx_export():
            return self._forward_export(x)
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, self.head_dim)  # (B, N, 3, H, hd)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, H, N, hd) each
        x = F.scaled_dot_product_attention(q, k, v)  # (B, H, N, hd): softmax(q k^T / sqrt(hd)) v
        x = x.transpose(1, 2).reshape(batch, tokens, dim)  # (B, N, D)
        return self.proj(x)

    def _split_heads(self, x: torch.Tensor, part: int) -> torch.Tensor:
        """x (B, N, D) -> part (0: q, 1: k, 2: v) projected and split, (B, H, N, hd)."""
        rows = slice(part * self.dim, (part + 1) * self.dim)  # Python ints: folded at export
        bias = self.qkv.bias[rows] if self.qkv.bias is not None else None
        y = F.linear(x, self.qkv.weight[rows], bias)  # (B, N, D)
        return y.reshape(y.shape[0], y.shape[1], self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, N, hd)

    def _forward_export(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = (self._split_heads(x, part) for part in range(3))  # (B, H, N, hd) each
        scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(self.head_dim)  # (B, H, N, N)
        x = torch.matmul(scores.softmax(dim=-1), v)  # (B, H, N, hd)
        x = x.transpose(1, 2)  # (B, N, H, hd)
        return self.proj(x.reshape(x.shape[0], x.shape[1], self.dim))  # (B, N, D)
