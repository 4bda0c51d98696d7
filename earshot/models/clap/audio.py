"""CLAP's audio tower: log-mel (B, T, M) -> L2-normalised joint embedding (B, P) [-> zero-shot logits (B, C)].

The HTS-AT encoder itself is transformers' ClapAudioModel, wrapped, not re-implemented: batch norm
over mel bins, the (T, M) = (1001, 64) mel resized (bicubic) to 1024 frames and folded into a
256 x 256 image, a Swin transformer, the per-frequency-group pooling, then the projection MLP
(ClapProjectionLayer). Only the unfused path runs here (fusion needs `is_longer` crops that a
fixed-window bundle never has; fused checkpoints are refused by the converter).

Zero-shot head: the prompts' text embeddings (L2-normalised, computed once at export) times
exp(logit_scale_a), as one bias-free Linear: logits = exp(logit_scale_a) * cos(audio, prompt),
transformers' `logits_per_audio`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class ClapAudioTower(nn.Module):
    def __init__(self, audio_model: nn.Module, projection: nn.Module, zero_shot_weight: torch.Tensor | None = None):
        """audio_model: transformers' ClapAudioModel; projection: its ClapProjectionLayer;
        zero_shot_weight (C, P): exp(logit_scale_a) * normalised prompt embeddings, or None."""
        super().__init__()
        self.audio_model = audio_model
        self.projection = projection
        if zero_shot_weight is not None:
            self.zero_shot = nn.Linear(zero_shot_weight.shape[1], zero_shot_weight.shape[0], bias=False)
            self.zero_shot.weight.data.copy_(zero_shot_weight)
        else:
            self.zero_shot = None

    def forward(self, log_mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """log_mel (B, T, M) in dB -> (embedding (B, P) unit norm, logits (B, C) | None)."""
        features = log_mel.unsqueeze(1)  # (B, 1, T, M): the extractor's input_features
        pooled = self.audio_model(input_features=features).pooler_output  # (B, hidden)
        embedding = F.normalize(self.projection(pooled), dim=-1)  # (B, P)
        if self.zero_shot is None:
            return embedding, None
        return embedding, self.zero_shot(embedding)  # (B, C)
