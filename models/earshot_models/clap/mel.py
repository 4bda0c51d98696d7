"""Mel filter banks of the HTK and Slaney kinds, (n_fft/2 + 1, mels), float64.

Triangles are linear in Hz between band edges evenly spaced on the mel scale; FFT bin k sits at
k * (sample_rate // 2) / (bins - 1) Hz. Slaney normalisation divides each triangle by its width
in Hz / 2 (constant energy per band), as librosa's `norm="slaney"` does.
"""

from __future__ import annotations

import numpy as np

SLANEY_LINEAR_HZ_PER_MEL = 200.0 / 3  # below 1 kHz the Slaney scale is linear
SLANEY_LOG_START_HZ = 1000.0
SLANEY_LOG_START_MEL = SLANEY_LOG_START_HZ / SLANEY_LINEAR_HZ_PER_MEL  # 15
SLANEY_LOG_STEP = np.log(6.4) / 27.0  # 27 mels per factor 6.4 above 1 kHz


def hz_to_mel(freq: np.ndarray, scale: str) -> np.ndarray:
    freq = np.asarray(freq, dtype=np.float64)
    if scale == "htk":
        return 2595.0 * np.log10(1.0 + freq / 700.0)
    linear = freq / SLANEY_LINEAR_HZ_PER_MEL
    log = SLANEY_LOG_START_MEL + np.log(np.maximum(freq, SLANEY_LOG_START_HZ) / SLANEY_LOG_START_HZ) / SLANEY_LOG_STEP
    return np.where(freq >= SLANEY_LOG_START_HZ, log, linear)


def mel_to_hz(mel: np.ndarray, scale: str) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    if scale == "htk":
        return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
    linear = mel * SLANEY_LINEAR_HZ_PER_MEL
    log = SLANEY_LOG_START_HZ * np.exp(SLANEY_LOG_STEP * (np.maximum(mel, SLANEY_LOG_START_MEL) - SLANEY_LOG_START_MEL))
    return np.where(mel >= SLANEY_LOG_START_MEL, log, linear)


def mel_filter_bank(
    num_fft_bins: int, num_mels: int, f_min: float, f_max: float, sample_rate: int, scale: str, norm: str | None
) -> np.ndarray:
    """(num_fft_bins, num_mels) triangular filters."""
    edges = mel_to_hz(np.linspace(hz_to_mel(f_min, scale), hz_to_mel(f_max, scale), num_mels + 2), scale)  # (M + 2,)
    bins = np.linspace(0, sample_rate // 2, num_fft_bins)  # (K,)
    width = np.diff(edges)  # (M + 1,)
    offset = edges[None, :] - bins[:, None]  # (K, M + 2)
    rising = -offset[:, :-2] / width[:-1]  # (K, M)
    falling = offset[:, 2:] / width[1:]  # (K, M)
    banks = np.maximum(0.0, np.minimum(rising, falling))
    if norm == "slaney":
        banks = banks * (2.0 / (edges[2:] - edges[:-2]))[None, :]
    return banks
