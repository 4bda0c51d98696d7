"""PaSST's log-mel frontend (AugmentMelSTFT in eval mode) as one exportable, batched module.

The reference, per clip: pre-emphasis as a valid conv (y[n] = x[n+1] - 0.97 x[n], N - 1 samples),
torch.stft(n_fft=1024, hop 320, symmetric Hann of 800 centred in the 1024 frame, center=True with
reflect padding), power, Kaldi mel triangles (0-15 kHz, zero weight on Nyquist), log(mel + 1e-5),
(x + 4.5) / 5. Here: a 2-tap Conv1d, a reflect Pad, a strided Conv1d whose kernel is the
Hann-windowed DFT basis (computed once in float64), power, a mel matmul and a log.

Only the samples the frames read are padded: the first frame starts n_fft/2 - (n_fft - win)/2
samples before y[0] (reflected), the last ends (T - 1) * hop + win after that start.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from earshot_models.config import StftMelConfig
from earshot_models.frontend.kaldi_fbank import mel_banks, window_function
from earshot_models.frontend.window import fit_to_window


def stft_kernel(config: StftMelConfig) -> np.ndarray:
    """(2 * (n_fft/2 + 1), win_length), float64: rows [0, K) the real parts of the DFT of the
    Hann-windowed frame, rows [K, 2K) the imaginary parts. The window sits at offset
    (n_fft - win_length) // 2 of the n_fft frame, as torch.stft places it."""
    offset = (config.n_fft - config.win_length) // 2
    n = np.arange(config.win_length) + offset  # positions in the n_fft frame
    phase = 2.0 * np.pi * np.outer(np.arange(config.num_fft_bins), n) / config.n_fft  # (K, win)
    basis = np.concatenate([np.cos(phase), -np.sin(phase)], axis=0)  # (2K, win)
    return basis * window_function("hanning", config.win_length)[None, :]  # symmetric Hann


class PasstMel(nn.Module):
    """waveform (B, N) float32 at full scale 1.0, num_samples (B,) int64 -> log-mel (B, T, M) (time, mel).

    The window is the clip: samples past num_samples are zeros (whatever the caller left there),
    and a partial window runs as the reference runs a zero-padded clip.
    """

    def __init__(self, config: StftMelConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.window_samples = config.window_samples
        self.num_fft_bins = config.num_fft_bins
        self.emphasis = nn.Conv1d(1, 1, kernel_size=2, bias=False)
        self.emphasis.weight.data.copy_(torch.tensor([[[-config.preemphasis, 1.0]]]))  # (1, 1, 2)
        self.emphasis.weight.requires_grad_(False)
        self.framing = nn.Conv1d(
            1, 2 * config.num_fft_bins, kernel_size=config.win_length, stride=config.hop_length, bias=False
        )
        kernel = torch.from_numpy(stft_kernel(config)).to(torch.float32)  # (2K, win)
        self.framing.weight.data.copy_(kernel.unsqueeze(1))  # (2K, 1, win)
        self.framing.weight.requires_grad_(False)
        banks = mel_banks(config.num_mel_bins, config.n_fft, config.sample_rate, config.low_freq, config.high_freq)
        self.register_buffer("mel_t", torch.from_numpy(banks.T.copy()).to(torch.float32), persistent=False)  # (K, M)
        emphasised = config.window_samples - 1
        self.pad_left = config.n_fft // 2 - (config.n_fft - config.win_length) // 2  # reflected before y[0]
        self.pad_right = (config.num_frames - 1) * config.hop_length + config.win_length - emphasised - self.pad_left
        if not 0 <= self.pad_right <= config.n_fft // 2:
            raise ValueError(f"hop {config.hop_length} and win {config.win_length} leave the frames off the signal")

    def forward(self, waveform: torch.Tensor, num_samples: torch.Tensor) -> torch.Tensor:
        config = self.config
        if not torch.jit.is_tracing():  # traced (ONNX export) at exactly window_samples: static shapes
            waveform = fit_to_window(waveform, self.window_samples)
        sample = torch.arange(waveform.shape[-1], device=waveform.device)  # (N,)
        real = sample.unsqueeze(0) < num_samples.unsqueeze(1)  # (B, N)
        waveform = torch.where(real, waveform, 0.0)  # (B, N): zeros past the real samples
        y = self.emphasis(waveform.unsqueeze(1))  # (B, 1, N - 1): x[n+1] - c x[n]
        y = nn.functional.pad(y, (self.pad_left, self.pad_right), mode="reflect")  # (B, 1, (T-1) * hop + win)
        spectrum = self.framing(y)  # (B, 2K, T): rows [0, K) real, [K, 2K) imaginary
        squared = spectrum.pow(2).reshape(-1, 2, self.num_fft_bins, config.num_frames)  # (B, 2, K, T)
        power = squared.sum(dim=1)  # (B, K, T)
        mel = torch.matmul(power.transpose(1, 2), self.mel_t)  # (B, T, M)
        log_mel = torch.log(mel + config.log_offset)  # (B, T, M)
        return (log_mel - config.norm_mean) / config.norm_scale  # (B, T, M)
