"""Swin window attention with a learned relative position bias table.

Tokens come in windows of W x W; every head adds table[index[i, j]] to the score of token i
attending to token j, where index enumerates the (2W - 1)^2 relative (row, column) offsets. In
shifted blocks a mask (0 or -100, per window) keeps tokens that the cyclic shift brought together
from attending to each other. Bias and mask are one additive term: scaled_dot_product_attention in
PyTorch, plain MatMul / Add / Softmax / MatMul under ONNX export.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def relative_position_index(window: int) -> torch.Tensor:
    """(W^2, W^2) int64: the table row for each (query, key) pair of a window."""
    rows, cols = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    coords = torch.stack([rows.flatten(), cols.flatten()])  # (2, W^2)
    offset = coords[:, :, None] - coords[:, None, :] + (window - 1)  # (2, W^2, W^2), each in [0, 2W - 2]
    return offset[0] * (2 * window - 1) + offset[1]  # (W^2, W^2)


class WindowAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, window: int, qkv_bias: bool):
        super().__init__()
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)  # rows [q; k; v]
        self.proj = nn.Linear(dim, dim)
        self.bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))  # ((2W-1)^2, H)
        self.register_buffer("bias_index", relative_position_index(window), persistent=False)  # (W^2, W^2)

    def _split_heads(self, x: torch.Tensor, part: int) -> torch.Tensor:
        """x (B', N, D) -> part (0: q, 1: k, 2: v) projected and split, (B', H, N, hd)."""
        rows = slice(part * self.dim, (part + 1) * self.dim)
        bias = self.qkv.bias[rows] if self.qkv.bias is not None else None
        y = F.linear(x, self.qkv.weight[rows], bias)  # (B', N, D)
        return y.reshape(y.shape[0], y.shape[1], self.num_heads, self.head_dim).transpose(1, 2)  # (B', H, N, hd)

    def forward(self, windows: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """windows (B * nW, N = W^2, D), mask (nW, N, N) or None -> (B * nW, N, D)."""
        count, tokens, _ = windows.shape
        q, k, v = (self._split_heads(windows, part) for part in range(3))  # (B * nW, H, N, hd) each
        bias = self.bias_table[self.bias_index].permute(2, 0, 1).unsqueeze(0)  # (1, H, N, N)
        if mask is not None:
            per_window = mask.shape[0]
            bias = bias + mask.unsqueeze(1)  # (nW, H, N, N)
            q, k, v = (t.reshape(count // per_window, per_window, self.num_heads, tokens, self.head_dim)
                       for t in (q, k, v))  # (B, nW, H, N, hd): windows of one clip line up with the mask
        if torch.onnx.is_in_onnx_export():
            scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(self.head_dim) + bias  # (..., H, N, N)
            out = torch.matmul(scores.softmax(dim=-1), v)  # (..., H, N, hd)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (..., H, N, hd)
        out = out.reshape(count, self.num_heads, tokens, self.head_dim).transpose(1, 2)  # (B * nW, N, H, hd)
        return self.proj(out.reshape(count, tokens, self.dim))  # (B * nW, N, D)
