"""Waveform in, embedding and logits out: a frontend and an encoder in one exportable module.

The frontend stays the submodule named `frontend`: the exporter keeps every ONNX node under
"/frontend/" in float32 when it makes fp16 and int8 variants.
"""

from __future__ import annotations

import torch
from torch import nn


class WaveformModel(nn.Module):
    """forward(waveform (B, N) float32, num_samples (B,) int64) -> (embedding (B, D), logits (B, C) | None).

    frontend(waveform, num_samples) -> features; encoder(features) = encoder.forward_head(
    encoder.forward_features(features)) -> (embedding, logits).
    """

    def __init__(self, frontend: nn.Module, encoder: nn.Module):
        super().__init__()
        self.frontend = frontend
        self.encoder = encoder

    def forward(self, waveform: torch.Tensor, num_samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        features = self.frontend(waveform, num_samples)  # (B, T, F)
        return self.encoder(features)  # through __call__, so exported node names start "/encoder/"
