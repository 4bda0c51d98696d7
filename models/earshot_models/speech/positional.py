"""Convolutional position embeddings over the frame sequence, added to the projected features.

wav2vec 2.0, HuBERT, UniSpeech-SAT, WavLM (`weight_norm`): one grouped Conv1d (kernel
num_conv_pos_embeddings, padding kernel // 2) -> SamePad (an even kernel gives T + 1 outputs: the
last is dropped) -> GELU. The reference wraps the conv in weight norm (dim=2); the converter folds
it (weight = g * v / ||v||), so here it is a plain conv.

data2vec-audio (`stacked`): num_conv_pos_embeddings such layers in sequence, each grouped Conv1d
(kernel conv_pos_kernel_size, no weight norm) -> SamePad -> LayerNorm over channels without
parameters -> GELU; the embedding is the output of the last one.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from earshot_models.speech.config import CONV_NORM_EPS


class PositionConv(nn.Module):
    """x (B, D, T) -> GELU(norm(grouped conv(x)[..., :T])) (B, D, T); norm: parameter-free LayerNorm or none."""

    def __init__(self, dim: int, kernel_size: int, groups: int, layer_norm: bool):
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, kernel_size=kernel_size, padding=kernel_size // 2, groups=groups)
        self.dim = dim
        self.trim = 1 if kernel_size % 2 == 0 else 0  # SamePad
        self.layer_norm = layer_norm
        self.act = nn.GELU(approximate="none")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)  # (B, D, T + trim)
        if self.trim:
            y = y[:, :, : -self.trim]  # (B, D, T)
        if self.layer_norm:
            y = F.layer_norm(y.transpose(1, 2), (self.dim,), eps=CONV_NORM_EPS).transpose(1, 2)  # (B, D, T)
        return self.act(y)


class ConvPositionEmbedding(PositionConv):
    """frames (B, T, D) -> position embedding (B, T, D): one weight-norm-folded conv, no norm."""

    def __init__(self, dim: int, kernel_size: int, groups: int):
        super().__init__(dim, kernel_size, groups, layer_norm=False)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return super().forward(frames.transpose(1, 2)).transpose(1, 2)  # (B, T, D)


class StackedConvPositionEmbedding(nn.Module):
    """frames (B, T, D) -> position embedding (B, T, D): data2vec-audio's `depth` convs with LayerNorm."""

    def __init__(self, dim: int, kernel_size: int, groups: int, depth: int):
        super().__init__()
        self.layers = nn.ModuleList(PositionConv(dim, kernel_size, groups, layer_norm=True) for _ in range(depth))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames.transpose(1, 2)  # (B, D, T)
        for layer in self.layers:
            x = layer(x)  # (B, D, T)
        return x.transpose(1, 2)  # (B, T, D)
