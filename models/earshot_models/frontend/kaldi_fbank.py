"""Kaldi-compatible log-mel filterbank as one exportable, batched module.

Kaldi's `compute-fbank-feats` (and torchaudio.compliance.kaldi.fbank, and transformers'
ASTFeatureExtractor numpy path) works frame by frame: cut a frame, subtract its mean, pre-emphasise
it (first sample against itself), window it, zero-pad it to n_fft, take the power spectrum, apply
triangular mel filters, take the log. Every step up to the DFT is linear in the frame, so they fold
into one matrix, computed once in float64 at construction:

    kernel = DFT[re; im] @ diag(window) @ PreEmphasis @ (I - 1/L)      (2 * (n_fft/2 + 1), L)

and framing plus that matrix is a Conv1d with stride frame_shift. What is left is power,
a matmul by the mel matrix, and a log: four ONNX ops any runtime runs on any device.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from earshot_models.config import FbankConfig
from earshot_models.frontend.window import fit_to_window


def window_function(kind: str, length: int) -> np.ndarray:
    """Kaldi's analysis windows (symmetric), float64."""
    n = np.arange(length, dtype=np.float64)
    a = 2.0 * np.pi / (length - 1)
    if kind == "hanning":
        return 0.5 - 0.5 * np.cos(a * n)
    if kind == "povey":
        return (0.5 - 0.5 * np.cos(a * n)) ** 0.85
    if kind == "hamming":
        return 0.54 - 0.46 * np.cos(a * n)
    if kind == "rectangular":
        return np.ones(length, dtype=np.float64)
    raise ValueError(f"unknown window {kind!r}")


def mel_scale(freq: np.ndarray | float) -> np.ndarray | float:
    """Kaldi's mel scale: 1127 ln(1 + f / 700)."""
    return 1127.0 * np.log(1.0 + np.asarray(freq, dtype=np.float64) / 700.0)


def kaldi_mel_banks(config: FbankConfig) -> np.ndarray:
    """Kaldi's triangular mel filters for `config`, (num_mel_bins, n_fft/2 + 1), float64."""
    return mel_banks(config.num_mel_bins, config.n_fft, config.sample_rate, config.low_freq, config.high_freq)


def mel_banks(num_mel_bins: int, n_fft: int, sample_rate: int, low_freq: float, high_freq: float) -> np.ndarray:
    """Kaldi's triangular mel filters (torchaudio's `get_mel_banks`), (num_mel_bins, n_fft/2 + 1), float64.

    Triangles are evenly spaced and linear in mel (not in Hz); FFT bin k sits at
    k * sample_rate / n_fft Hz. The Nyquist bin gets weight 0, as in Kaldi. high_freq <= 0 means
    Nyquist + high_freq.
    """
    nyquist = 0.5 * sample_rate
    high_freq = high_freq if high_freq > 0 else nyquist + high_freq
    if not 0.0 <= low_freq < high_freq <= nyquist:
        raise ValueError(f"need 0 <= low_freq < high_freq <= Nyquist; got {low_freq}, {high_freq}")
    num_fft_bins = n_fft // 2  # bins below Nyquist
    mel_low, mel_high = mel_scale(low_freq), mel_scale(high_freq)
    mel_delta = (mel_high - mel_low) / (num_mel_bins + 1)
    index = np.arange(num_mel_bins, dtype=np.float64)[:, None]  # (M, 1)
    left = mel_low + index * mel_delta
    center = mel_low + (index + 1.0) * mel_delta
    right = mel_low + (index + 2.0) * mel_delta
    bin_mel = mel_scale(np.arange(num_fft_bins, dtype=np.float64) * sample_rate / n_fft)[None, :]
    up_slope = (bin_mel - left) / (center - left)  # (M, n_fft/2)
    down_slope = (right - bin_mel) / (right - center)
    banks = np.maximum(0.0, np.minimum(up_slope, down_slope))
    return np.pad(banks, ((0, 0), (0, 1)))  # (M, n_fft/2 + 1): zero weight on the Nyquist bin


def framing_kernel(config: FbankConfig) -> np.ndarray:
    """The folded per-frame linear map, (2 * (n_fft/2 + 1), frame_length), float64:
    rows [0, K) give the real parts of the DFT, rows [K, 2K) the imaginary parts."""
    length = config.frame_length
    operator = np.eye(length)
    if config.remove_dc:
        operator = operator - np.full((length, length), 1.0 / length)  # x - mean(x)
    if config.preemphasis:
        emphasis = np.eye(length)
        emphasis[np.arange(1, length), np.arange(length - 1)] = -config.preemphasis  # x[n] - c x[n-1]
        emphasis[0, 0] = 1.0 - config.preemphasis  # x[0] - c x[0]
        operator = emphasis @ operator
    operator = window_function(config.window, length)[:, None] * operator
    # The frame is zero-padded to n_fft, so only the first `length` DFT columns matter.
    phase = 2.0 * np.pi * np.outer(np.arange(config.num_fft_bins), np.arange(length)) / config.n_fft  # (K, L)
    basis = np.concatenate([np.cos(phase), -np.sin(phase)], axis=0)  # (2K, L)
    return basis @ operator


class KaldiFbank(nn.Module):
    """waveform (B, N) float32 at full scale 1.0, num_samples (B,) int64
    -> normalised log-mel (B, num_frames, num_mel_bins) (time, mel).

    The waveform is cut or zero-padded to `window_samples` (exactly `computed_frames` frames). Frames
    that reach past a row's `num_samples` are replaced by `pad_value`, so a clip zero-padded to
    the window gives what the reference gives on the clip alone (fbank of the real samples, then
    padded with `pad_value` to `num_frames`). A window shorter than the model's input
    (`window_frames` < `num_frames`) is padded with `pad_value` frames up to `num_frames` the same way.
    """

    def __init__(self, config: FbankConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.num_fft_bins = config.num_fft_bins
        self.window_samples = config.window_samples
        self.framing = nn.Conv1d(
            1, 2 * config.num_fft_bins, kernel_size=config.frame_length, stride=config.frame_shift, bias=False
        )
        kernel = framing_kernel(config) * config.wave_scale  # (2K, L)
        self.framing.weight.data.copy_(torch.from_numpy(kernel).to(torch.float32).unsqueeze(1))  # (2K, 1, L)
        self.framing.weight.requires_grad_(False)
        mel_t = torch.from_numpy(kaldi_mel_banks(config).T.copy()).to(torch.float32)  # (K, M)
        self.register_buffer("mel_t", mel_t, persistent=False)
        # A frame is real when it ends within the real samples: t * shift + length <= num_samples.
        frame_end = torch.arange(config.computed_frames, dtype=torch.int64) * config.frame_shift + config.frame_length
        self.register_buffer("frame_end", frame_end, persistent=False)  # (T,)

    def forward(self, waveform: torch.Tensor, num_samples: torch.Tensor) -> torch.Tensor:
        config = self.config
        if not torch.jit.is_tracing():  # traced (ONNX export) at exactly window_samples: static shapes
            waveform = fit_to_window(waveform, self.window_samples)
        spectrum = self.framing(waveform.unsqueeze(1))  # (B, 2K, T): rows [0, K) real, [K, 2K) imaginary
        # re^2 + im^2 as square, reshape, sum: every tensor here has one consumer, which keeps ONNX
        # Runtime's fp16 converter (it casts each input of a float32-pinned node) from duplicating casts.
        squared = spectrum.pow(2).reshape(-1, 2, self.num_fft_bins, config.computed_frames)  # (B, 2, K, T)
        power = squared.sum(dim=1)  # (B, K, T)
        mel = torch.matmul(power.transpose(1, 2), self.mel_t)  # (B, T, M)
        log_mel = torch.log(torch.clamp(mel, min=config.log_floor))  # (B, T, M)
        real_frame = self.frame_end.unsqueeze(0) <= num_samples.unsqueeze(1)  # (B, T)
        log_mel = torch.where(real_frame.unsqueeze(-1), log_mel, config.pad_value)  # (B, T, M)
        if config.computed_frames < config.num_frames:  # a window shorter than the model's input
            missing = config.num_frames - config.computed_frames
            log_mel = nn.functional.pad(log_mel, (0, 0, 0, missing), value=config.pad_value)  # (B, num_frames, M)
        return (log_mel - config.norm_mean) / (2.0 * config.norm_std)  # (B, T, M)
