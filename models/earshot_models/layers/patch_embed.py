"""Patch embedding: one strided Conv2d over the spectrogram image, flattened to tokens."""

from __future__ import annotations

import torch
from torch import nn


class PatchEmbed(nn.Module):
    """image (B, C, H, W) -> tokens (B, H' * W', D), row-major over (H', W').

    Overlapping patches (stride < patch) are what AST uses: 16x16 patches every 10 bins.
    """

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int, stride: tuple[int, int]):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=(patch_size, patch_size), stride=stride)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.proj(image)  # (B, D, H', W')
        return x.flatten(2).transpose(1, 2)  # (B, H' * W', D)
