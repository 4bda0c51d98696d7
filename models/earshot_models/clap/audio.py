"""CLAP's audio tower: log-mel (B, T, M) -> L2-normalised joint embedding (B, P) [-> zero-shot logits (B, C)].

HTS-AT (htsat.py) -> projection MLP (Linear, ReLU, Linear; transformers' ClapProjectionLayer)
-> L2 normalisation. Only the unfused path exists (fusion needs `is_longer` crops that a
fixed-window bundle never has; fused checkpoints are refused by the converter).

Zero-shot head: the prompts' text embeddings (L2-normalised, computed once at export) times
exp(logit_scale_a), as one bias-free Linear: logits = exp(logit_scale_a) * cos(audio, prompt),
transformers' `logits_per_audio`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from earshot_models.clap.config import HtsatConfig
from earshot_models.clap.htsat import HtsatEncoder


class ProjectionMlp(nn.Module):
    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(in_dim, out_dim)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))  # (B, P)


class ClapAudioTower(nn.Module):
    def __init__(self, config: HtsatConfig, num_frames: int, num_labels: int):
        super().__init__()
        self.encoder = HtsatEncoder(config, num_frames)
        self.projection = ProjectionMlp(config.num_features, config.projection_dim)
        self.zero_shot = nn.Linear(config.projection_dim, num_labels, bias=False) if num_labels else None

    def forward(self, log_mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """log_mel (B, T, M) in dB -> (embedding (B, P) unit norm, logits (B, C) | None)."""
        embedding = F.normalize(self.projection(self.encoder(log_mel)), dim=-1)  # (B, P)
        if self.zero_shot is None:
            return embedding, None
        return embedding, self.zero_shot(embedding)  # (B, C)
