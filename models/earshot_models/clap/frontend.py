"""CLAP's log-mel frontend as one exportable, batched module.

waveform (B, W) + num_samples (B,) -> repeat-pad -> reflect-pad n_fft/2 at both ends -> framing
Conv1d whose kernel is [cos; -sin] DFT rows times the periodic Hann window (stride hop_length)
-> re^2 + im^2 -> mel matmul -> 10 log10(max(., floor)) -> (B, frames, mels).

Repeat-pad (the extractor's "repeatpad" for clips shorter than the window): the first n =
num_samples samples are tiled floor(W / n) times, the rest is zeros. As a gather with index
t mod n, kept where t < n * floor(W / n): three integer ops, no loop.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from earshot_models.clap.config import ClapFrontendConfig
from earshot_models.clap.mel import mel_filter_bank
from earshot_models.frontend.window import fit_to_window


def stft_kernel(config: ClapFrontendConfig) -> np.ndarray:
    """(2K, n_fft) float64: rows [0, K) real parts, [K, 2K) imaginary parts of the windowed DFT."""
    n = np.arange(config.n_fft, dtype=np.float64)
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / config.n_fft)  # periodic Hann
    phase = 2.0 * np.pi * np.outer(np.arange(config.num_fft_bins), n) / config.n_fft  # (K, n_fft)
    return np.concatenate([np.cos(phase), -np.sin(phase)], axis=0) * window[None, :]


class ClapFrontend(nn.Module):
    """waveform (B, W) float32, num_samples (B,) int64 -> log-mel in dB (B, frames, mels)."""

    def __init__(self, config: ClapFrontendConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.num_fft_bins = config.num_fft_bins
        kernel = torch.from_numpy(stft_kernel(config)).to(torch.float32).unsqueeze(1)  # (2K, 1, n_fft)
        self.register_buffer("kernel", kernel, persistent=False)
        banks = mel_filter_bank(
            config.num_fft_bins,
            config.num_mel_bins,
            config.f_min,
            config.f_max,
            config.sample_rate,
            config.mel_scale,
            config.mel_norm,
        )
        self.register_buffer("mel_banks", torch.from_numpy(banks).to(torch.float32), persistent=False)  # (K, M)
        self.register_buffer("positions", torch.arange(config.window_samples, dtype=torch.int64), persistent=False)

    def pad_short(self, waveform: torch.Tensor, num_samples: torch.Tensor) -> torch.Tensor:
        """(B, W) zero-padded after num_samples -> (B, W) completed as the extractor completes short clips."""
        config = self.config
        if config.padding == "pad":
            return waveform  # already zeros after the real samples
        width = config.window_samples
        length = num_samples.clamp(min=1, max=width).unsqueeze(1)  # (B, 1)
        source = torch.remainder(self.positions.unsqueeze(0), length)  # (B, W): t mod n
        tiled = torch.gather(waveform, 1, source)  # (B, W)
        if config.padding == "repeat":  # tiled to the end
            return tiled
        repeats = torch.div(width, length, rounding_mode="floor")  # (B, 1)
        keep = self.positions.unsqueeze(0) < repeats * length  # (B, W): whole copies only
        return torch.where(keep, tiled, torch.zeros_like(tiled))  # (B, W)

    def forward(self, waveform: torch.Tensor, num_samples: torch.Tensor) -> torch.Tensor:
        config = self.config
        if not torch.jit.is_tracing():  # traced (ONNX export) at exactly window_samples
            waveform = fit_to_window(waveform, config.window_samples)
        waveform = self.pad_short(waveform, num_samples)  # (B, W)
        half = config.n_fft // 2
        padded = F.pad(waveform.unsqueeze(1), (half, half), mode="reflect")  # (B, 1, W + n_fft)
        spectrum = F.conv1d(padded, self.kernel, stride=config.hop_length)  # (B, 2K, T)
        squared = spectrum.pow(2).reshape(-1, 2, self.num_fft_bins, config.num_frames)  # (B, 2, K, T)
        power = squared.sum(dim=1)  # (B, K, T)
        mel = torch.matmul(power.transpose(1, 2), self.mel_banks)  # (B, T, M)
        return 10.0 * torch.log10(torch.clamp(mel, min=config.power_floor))  # (B, T, M)


