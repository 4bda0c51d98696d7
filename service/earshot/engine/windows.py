"""Cut a waveform into a bundle's fixed windows, each with the context its graph asks for.

Window i covers samples [i * hop, i * hop + window) of the clip. A clip of n samples gives
1 + ceil(max(0, n - window) / hop) windows: at least one, and the last one reaches the clip's end.
Samples of a window's own span past the clip's end are zeros; `num_samples` says how many leading
samples of each window's own span are real, so a graph with padding mode "frames" can pad its
features the way the reference model does.

A bundle with a context (bundle.Context) takes `before` samples ahead of each window and `after`
samples behind it: the graph's row for window i is the clip's samples
[i * hop - before, i * hop + window + after). Before the clip's start, and after its end behind a
window that lies within the clip, they are the clip padded per `edge` ("reflect": numpy's reflect
padding of the clip, as torch.stft center=True pads a whole clip; "zeros"). A window that runs
past the clip's end is zero-padded to its own end (Padding), and its context after it is zeros
too: the clip is zero-padded there, as YAMNet pads a waveform to whole patches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from earshot.bundle import CONTEXT_EDGES, Manifest


@dataclass(frozen=True)
class WindowSpec:
    sample_rate: int
    window_samples: int  # the window's own span
    hop_samples: int
    before: int = 0  # context samples ahead of the span
    after: int = 0  # context samples behind the span
    edge: str = "zeros"  # how context outside the clip is filled: "zeros" or "reflect"

    def __post_init__(self) -> None:
        if self.before < 0 or self.after < 0 or self.edge not in CONTEXT_EDGES:
            raise ValueError(f"bad context: before {self.before}, after {self.after}, edge {self.edge!r}")

    @property
    def input_samples(self) -> int:
        """Samples per row handed to the graph: the span with its context."""
        return self.before + self.window_samples + self.after


def window_spec(manifest: Manifest) -> WindowSpec:
    """How the engine cuts clips for the bundle with this manifest."""
    context = manifest.context
    return WindowSpec(
        sample_rate=manifest.sample_rate,
        window_samples=manifest.window_samples,
        hop_samples=manifest.hop_samples,
        before=context.before,
        after=context.after,
        edge=context.edge,
    )


@dataclass(frozen=True)
class Windows:
    samples: np.ndarray  # (n_windows, input_samples) float32; usually a strided view, rows copied when batched
    num_samples: np.ndarray  # (n_windows,) int64: real samples at the start of each window's own span
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
    span_end = (n_windows - 1) * spec.hop_samples + spec.window_samples  # where the last span ends
    starts = np.arange(n_windows, dtype=np.int64) * spec.hop_samples  # (n_windows,)

    # The clip as every row sees it, shifted by `before`: context, clip, then zeros if the last
    # window runs past the clip's end (its span and the context after it), else context.
    extended = _pad(waveform, spec.before, span_end - length + spec.after, spec.edge)  # (before + span_end + after,)
    padded = extended.copy() if spec.edge == "reflect" and span_end > length else extended
    if span_end > length:
        padded[spec.before + length :] = 0.0  # the last, zero-padded window to the end of its context
    # (n_windows, input_samples): every hop-th row of the sliding view, no copy
    samples = np.lib.stride_tricks.sliding_window_view(padded, spec.input_samples)[:: spec.hop_samples]
    if spec.edge == "reflect" and spec.after:
        # A row whose span ends inside the clip but whose `after` context runs past the clip's end
        # reads the clip's reflection there, not the zeros of the last, zero-padded window.
        span_ends = starts + spec.window_samples  # (n_windows,)
        crossing = np.flatnonzero((span_ends < length) & (span_ends + spec.after > length))
        if crossing.size:
            samples = samples.copy()
            for row in crossing:
                samples[row] = extended[starts[row] : starts[row] + spec.input_samples]

    num_samples = np.clip(length - starts, 0, spec.window_samples).astype(np.int64)  # (n_windows,)
    duration_s = length / spec.sample_rate
    start_s = starts / spec.sample_rate
    end_s = np.minimum((starts + spec.window_samples) / spec.sample_rate, duration_s)
    return Windows(samples=samples, num_samples=num_samples, start_s=start_s, end_s=end_s)


def _pad(waveform: np.ndarray, before: int, after: int, edge: str) -> np.ndarray:
    """(before + samples + after,) float32: the clip padded with zeros, or reflected about its end samples
    (numpy reflects again and again where the padding is longer than the clip)."""
    mode = "reflect" if edge == "reflect" else "constant"
    padded: np.ndarray = np.pad(np.asarray(waveform, dtype=np.float32), (before, after), mode=mode)  # type: ignore[call-overload]
    return padded
