"""Swin transformer pieces for HTS-AT: the block (window attention, shifted or not) and patch merging.

Both work on tokens (B, R * R, C) of a square R x R grid that is fixed per stage, so windows,
shifts and the shifted-window mask are decided at construction (a constant in the graph).
"""

from __future__ import annotations

import torch
from torch import nn

from earshot_models.clap.window_attention import WindowAttention
from earshot_models.layers.mlp import Mlp

SHIFTED_MASK_VALUE = -100.0  # what Swin adds between tokens the cyclic shift brought together


def partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, R, R, C) -> (B * nW, W * W, C), windows row-major."""
    batch, rows, cols, channels = x.shape
    x = x.reshape(batch, rows // window, window, cols // window, window, channels)  # (B, R/W, W, R/W, W, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, channels)  # (B * nW, W^2, C)


def merge(windows: torch.Tensor, window: int, rows: int, cols: int) -> torch.Tensor:
    """(B * nW, W * W, C) -> (B, R, R, C)."""
    channels = windows.shape[-1]
    x = windows.reshape(-1, rows // window, cols // window, window, window, channels)  # (B, R/W, R/W, W, W, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, rows, cols, channels)  # (B, R, R, C)


def shifted_window_mask(resolution: int, window: int, shift: int) -> torch.Tensor:
    """(nW, W^2, W^2): 0 between tokens of the same region of the shifted grid, -100 otherwise."""
    index = torch.arange(resolution)
    region = (index >= resolution - window).long() + (index >= resolution - shift).long()  # (R,): 0, 1 or 2
    labels = (region[:, None] * 3 + region[None, :]).to(torch.float32)  # (R, R)
    labels = partition(labels[None, :, :, None], window).squeeze(-1)  # (nW, W^2)
    same = labels[:, :, None] == labels[:, None, :]  # (nW, W^2, W^2)
    return torch.where(same, 0.0, SHIFTED_MASK_VALUE)


class SwinBlock(nn.Module):
    """x + attn(norm1(x)) over (shifted) windows, then x + mlp(norm2(x))."""

    def __init__(self, dim: int, num_heads: int, resolution: int, window: int, shifted: bool, mlp_ratio: float,
                 qkv_bias: bool, eps: float):
        super().__init__()
        self.resolution = resolution
        self.window = min(window, resolution)
        # a grid no larger than one window is not shifted (Swin's rule)
        self.shift = self.window // 2 if shifted and resolution > window else 0
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = WindowAttention(dim, num_heads, self.window, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        mask = shifted_window_mask(resolution, self.window, self.shift) if self.shift else None
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, channels = x.shape
        side = self.resolution
        y = self.norm1(x).reshape(batch, side, side, channels)  # (B, R, R, C)
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
        y = self.attn(partition(y, self.window), self.mask)  # (B * nW, W^2, C)
        y = merge(y, self.window, side, side)  # (B, R, R, C)
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + y.reshape(batch, side * side, channels)  # (B, R^2, C)
        return x + self.mlp(self.norm2(x))  # (B, R^2, C)


class PatchMerging(nn.Module):
    """(B, R * R, C) -> (B, R/2 * R/2, 2C): each 2 x 2 neighbourhood concatenated (order: (0,0), (1,0),
    (0,1), (1,1) as (row, column)), LayerNorm, then a bias-free Linear 4C -> 2C."""

    def __init__(self, dim: int, resolution: int):
        super().__init__()
        self.resolution = resolution
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, channels = x.shape
        grid = x.reshape(batch, self.resolution, self.resolution, channels)  # (B, R, R, C)
        parts = [grid[:, row::2, col::2, :] for col in range(2) for row in range(2)]  # 4 x (B, R/2, R/2, C)
        merged = torch.cat(parts, dim=-1).reshape(batch, -1, 4 * channels)  # (B, R^2 / 4, 4C)
        return self.reduction(self.norm(merged))  # (B, R^2 / 4, 2C)
