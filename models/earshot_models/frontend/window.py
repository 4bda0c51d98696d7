"""Fitting a batch of waveforms to a frontend's window, outside a traced graph."""

from __future__ import annotations

import torch
from torch import nn


def fit_to_window(waveform: torch.Tensor, window_samples: int) -> torch.Tensor:
    """(B, N) -> (B, window_samples): cut, or zero-padded at the end."""
    length = waveform.shape[-1]
    if length > window_samples:
        return waveform[:, :window_samples]
    if length < window_samples:
        return nn.functional.pad(waveform, (0, window_samples - length))
    return waveform
