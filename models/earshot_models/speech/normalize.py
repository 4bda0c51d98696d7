"""The feature extractor's input normalisation, inside the model so that the graph takes the waveform.

Wav2Vec2FeatureExtractor with do_normalize=True: each window (one row) becomes
(x - mean(x)) / sqrt(var(x) + 1e-7), the variance the population one (numpy's x.var()). Checkpoints
whose extractor has do_normalize=False (the group-norm base models) get the waveform as it is.
"""

from __future__ import annotations

import torch
from torch import nn

from earshot_models.speech.config import NORMALIZE_EPS


class WaveformNorm(nn.Module):
    """waveform (B, N) -> zero mean, unit variance per row (B, N); the identity when `enabled` is False."""

    def __init__(self, enabled: bool, eps: float = NORMALIZE_EPS):
        super().__init__()
        self.enabled = enabled
        self.eps = eps

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return waveform
        mean = waveform.mean(dim=1, keepdim=True)  # (B, 1)
        centred = waveform - mean  # (B, N)
        var = (centred * centred).mean(dim=1, keepdim=True)  # (B, 1): population variance
        return centred / torch.sqrt(var + self.eps)  # (B, N)
