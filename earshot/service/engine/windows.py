"""Cut a waveform into a bundle's fixed windows.

Window i covers samples [i * hop, i * hop + window) of the clip. A clip of n samples gives
1 + ceil(max(0, n - window) / hop) windows: at least one, and the last one reaches the clip's end.
Samples past the end are zeros; `num_samples` says how many leading samples of each window are
real, so a graph with padding mode "frames" can pad its features the way the reference model does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class WindowSpec:
    sample_rate: int
    window_samples: int
    hop_samples: int


@dataclass(frozen=True)
class Windows:
    samples: np.ndarray  # (n_windows, window_samples) float32; a strided view, rows copied when batched
    num_samples: np.ndarray  # (n_windows,) int64: real samples at the start of each window
    start_s: np.ndarray  # (n_windows,) float64
    end_s: np.ndarray  # (n_windows,) float64, clipped to the clip's duration

    def __len__(self) -> int:
        return int(self.num_samples.shape[0])


def count_windows(num_samples: int, spec: WindowSpec) -> int:
    overhang = max(0, num_samples - spec.window_samples)
    return 1 + -(-overhang // spec.hop_samples)  # ceil division


def cut(waveform: np.ndarray, spec: WindowSpec) -> Windows:
    """Windows of a mono float32 waveform (samples,)."""
    if waveform.ndim != 1:
        raise ValueError(f"waveform must be 1-D (samples,), got shape {waveform.shape}")
    length = int(waveform.shape[0])
    if length == 0:
        raise ValueError("cannot window an empty waveform")
    n_windows = count_windows(length, spec)
    padded_length = (n_windows - 1) * spec.hop_samples + spec.window_samples
    padded = np.zeros(padded_length, dtype=np.float32)  # (padded_length,)
    padded[:length] = waveform
    # (n_windows, window_samples): every hop-th row of the sliding view, no copy
    samples = np.lib.stride_tricks.sliding_window_view(padded, spec.window_samples)[:: spec.hop_samples]
    starts = np.arange(n_windows, dtype=np.int64) * spec.hop_samples  # (n_windows,)
    num_samples = np.clip(length - starts, 0, spec.window_samples).astype(np.int64)  # (n_windows,)
    duration_s = length / spec.sample_rate
    start_s = starts / spec.sample_rate
    end_s = np.minimum((starts + spec.window_samples) / spec.sample_rate, duration_s)
    return Windows(samples=samples, num_samples=num_samples, start_s=start_s, end_s=end_s)
