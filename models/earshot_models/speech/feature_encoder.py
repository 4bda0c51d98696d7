"""The convolutional feature encoder over the raw waveform, and the feature projection.

waveform (B, N) -> (B, 1, N) -> for each conv layer i: Conv1d(kernel_i, stride_i, no padding)
  -> norm -> GELU -> (B, C_last, T) -> (B, T, C_last)
  "group" (feat_extract_norm): GroupNorm with one group per channel (each channel normalised over
      the window's frames) after the first conv only; the other convs have no norm.
  "layer": LayerNorm over the channels of each frame after every conv.
feature projection: LayerNorm(C_last) (not in HuBERT checkpoints with feat_proj_layer_norm=False)
  -> Linear(C_last -> hidden) -> (B, T, D).
"""

from __future__ import annotations

import torch
from torch import nn

from earshot_models.speech.config import CONV_NORM_EPS, SpeechEncoderConfig


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of a (B, C, T) tensor, frame by frame."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)  # (B, C, T)


class ConvLayer(nn.Module):
    """x (B, C_in, N) -> GELU(norm(conv(x))) (B, C_out, (N - kernel) // stride + 1)."""

    def __init__(self, in_dim: int, out_dim: int, kernel: int, stride: int, bias: bool, norm: str | None):
        super().__init__()
        self.conv = nn.Conv1d(in_dim, out_dim, kernel_size=kernel, stride=stride, bias=bias)
        self.norm: nn.Module
        if norm == "group":
            self.norm = nn.GroupNorm(num_groups=out_dim, num_channels=out_dim, eps=CONV_NORM_EPS, affine=True)
        elif norm == "layer":
            self.norm = ChannelLayerNorm(out_dim, eps=CONV_NORM_EPS)
        else:
            self.norm = nn.Identity()
        self.act = nn.GELU(approximate="none")  # feat_extract_activation "gelu": exact

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))  # (B, C_out, T')


class ConvFeatureEncoder(nn.Module):
    """waveform (B, N) -> features (B, T, C_last)."""

    def __init__(self, config: SpeechEncoderConfig):
        super().__init__()
        layers = []
        in_dim = 1
        for index, (dim, kernel, stride) in enumerate(
            zip(config.conv_dim, config.conv_kernel, config.conv_stride, strict=True)
        ):
            norm = config.conv_norm if config.conv_norm == "layer" or index == 0 else None
            layers.append(ConvLayer(in_dim, dim, kernel, stride, config.conv_bias, norm))
            in_dim = dim
        self.conv_layers = nn.ModuleList(layers)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        x = waveform.unsqueeze(1)  # (B, 1, N)
        for layer in self.conv_layers:
            x = layer(x)  # (B, C_i, T_i)
        return x.transpose(1, 2)  # (B, T, C_last)


class FeatureProjection(nn.Module):
    """features (B, T, C_last) -> LayerNorm (optional) -> Linear -> (B, T, D)."""

    def __init__(self, in_dim: int, hidden_size: int, norm: bool, layer_norm_eps: float):
        super().__init__()
        self.norm = nn.LayerNorm(in_dim, eps=layer_norm_eps) if norm else nn.Identity()
        self.linear = nn.Linear(in_dim, hidden_size)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(self.norm(features))  # (B, T, D)
