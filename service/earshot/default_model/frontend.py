"""The YAMNet log-mel frontend as ONNX nodes: waveform [B, 15600] -> log-mel patch [B, 1, 96, 64].

torch_audioset computes, over a whole clip (torchaudio MelSpectrogram, center=True):
    frames   reflect-pad 256 samples each side; frame f covers padded [160 f, 160 f + 512)
    window   400-tap periodic Hann, zero-padded centred in the 512 frame (taps 56..455)
    spectrum |rfft(frame * window)| (magnitude: torchaudio's power 2, then sqrt)
    mel      64 HTK triangles 125-7500 Hz in Hz space, unnormalised (torchaudio melscale_fbanks)
    log      log(mel + 0.001)
and patch k is frames [48 k, 48 k + 96). Frame f is centred on sample 160 f, so the 96 frames of
patch k are centred on the first 96 hops of the window that starts at sample 7680 k; their
400-tap windows reach 200 samples before that window and 40 after it. The graph therefore takes
the window with that context (the manifest's Context(before=200, after=40, edge="reflect")): the
engine fills it with the clip's real neighbouring samples, and with the clip's reflection
outside the clip, as center=True pads the whole clip. No padding happens in the graph.

The framing and the windowed DFT are one Conv1d (kernel 400, stride 160) whose filters are the
cos and sin rows of the DFT times the window, restricted to the bins some mel filter uses.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from earshot.default_model.config import FRONTEND, FrontendConfig

IR_VERSION = 10  # ONNX Runtime 1.20+ reads it (onnx 1.23 would write 14 by default)


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + hz / 700.0)  # HTK


def mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_filterbank(config: FrontendConfig = FRONTEND) -> np.ndarray:
    """(n_freqs, n_mels) = (257, 64): triangles linear in Hz between HTK-mel-spaced edges."""
    bin_hz = np.linspace(0.0, config.sample_rate // 2, config.n_freqs)  # (257,)
    edges_mel = np.linspace(hz_to_mel(config.f_min), hz_to_mel(config.f_max), config.n_mels + 2)
    edges_hz = mel_to_hz(edges_mel)  # (66,)
    lower, centre, upper = edges_hz[:-2], edges_hz[1:-1], edges_hz[2:]  # (64,) each
    rising = (bin_hz[:, None] - lower[None, :]) / (centre - lower)[None, :]  # (257, 64)
    falling = (upper[None, :] - bin_hz[:, None]) / (upper - centre)[None, :]  # (257, 64)
    return np.maximum(0.0, np.minimum(rising, falling))


def periodic_hann(length: int) -> np.ndarray:
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(length) / length)


def used_bins(config: FrontendConfig = FRONTEND) -> np.ndarray:
    """The DFT bins with a non-zero weight in some mel filter (the others never reach the output)."""
    return np.flatnonzero(mel_filterbank(config).max(axis=1) > 0)


def dft_filters(bins: np.ndarray, config: FrontendConfig = FRONTEND) -> np.ndarray:
    """(2 K, 1, win_length): cos rows then -sin rows for `bins`, times the window, as conv filters.

    Tap t of the 400-tap kernel is sample t + 56 of the 512-sample frame, so the DFT phase uses
    t + 56 (the magnitude does not depend on it, but the real and imaginary parts do).
    """
    taps = np.arange(config.win_length) + config.window_offset  # (400,) positions in the n_fft frame
    phase = 2.0 * np.pi * np.outer(bins, taps) / config.n_fft  # (K, 400)
    window = periodic_hann(config.win_length)[None, :]  # (1, 400)
    filters = np.concatenate([np.cos(phase) * window, -np.sin(phase) * window])  # (2 K, 400)
    return filters[:, None, :].astype(np.float32)  # (2 K, 1, 400)


def frontend_nodes(
    waveform: str, log_mel: str, config: FrontendConfig = FRONTEND, prefix: str = "/frontend/"
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Nodes (and their initializers) computing `log_mel` [B, 1, 96, 64] from `waveform` [B, 15600]:
    samples -200 .. 15399 around a 15360-sample window (config.input_samples)."""
    bins = used_bins(config)
    num_bins = len(bins)

    def name(short: str) -> str:
        return prefix + short

    tensors = [
        numpy_helper.from_array(np.array([1], dtype=np.int64), name("axis1")),
        numpy_helper.from_array(dft_filters(bins, config), name("dft_filters")),
        numpy_helper.from_array(np.array([num_bins, num_bins], dtype=np.int64), name("split")),
        numpy_helper.from_array(mel_filterbank(config)[bins].T.astype(np.float32), name("mel_filters")),
        numpy_helper.from_array(np.array(config.log_offset, dtype=np.float32), name("log_offset")),
    ]
    nodes = [
        # (B, 15600) -> (B, 1, 15600): samples -200 .. 15399 around the window
        helper.make_node("Unsqueeze", [waveform, name("axis1")], [name("wave")], name=name("Unsqueeze")),
        # (B, 2 K, 96): frame j covers input [160 j, 160 j + 400), i.e. centred on window sample 160 j
        helper.make_node(
            "Conv",
            [name("wave"), name("dft_filters")],
            [name("spectrum")],
            strides=[config.hop_length],
            kernel_shape=[config.win_length],
            name=name("Conv"),
        ),
        helper.make_node("Mul", [name("spectrum"), name("spectrum")], [name("squares")], name=name("Square")),
        helper.make_node(
            "Split", [name("squares"), name("split")], [name("real2"), name("imag2")], axis=1, name=name("Split")
        ),  # (B, K, 96) each
        helper.make_node("Add", [name("real2"), name("imag2")], [name("power")], name=name("Power")),
        helper.make_node("Sqrt", [name("power")], [name("magnitude")], name=name("Magnitude")),  # (B, K, 96)
        # (64, K) @ (B, K, 96) -> (B, 64, 96)
        helper.make_node("MatMul", [name("mel_filters"), name("magnitude")], [name("mel")], name=name("Mel")),
        helper.make_node("Add", [name("mel"), name("log_offset")], [name("mel_offset")], name=name("Offset")),
        helper.make_node("Log", [name("mel_offset")], [name("log_mel_bt")], name=name("Log")),  # (B, 64, 96)
        helper.make_node(
            "Transpose", [name("log_mel_bt")], [name("log_mel_tb")], perm=[0, 2, 1], name=name("Transpose")
        ),  # (B, 96, 64)
        helper.make_node("Unsqueeze", [name("log_mel_tb"), name("axis1")], [log_mel], name=name("Patch")),
        # (B, 1, 96, 64)
    ]
    return nodes, tensors

