"""The reference pipeline the bundle is checked against at build time, and the parity report.

Reference = torch_audioset's way, in numpy: log-mel frames over the WHOLE clip (reflect padding
of 256 samples at the clip's two ends only, center=True), patches of 96 frames every 48 (only
whole patches: (frames - 96) // 48 + 1 of them), each quantised to uint8 and run through the
ORIGINAL source graph at batch 1. The bundle sees the engine's windows (0.96 s every 0.48 s, the
last one reaching the clip's end, zero-padded) each with 200 samples of the clip before it and
40 after it (reflected outside the clip), so window k computes exactly the frames of patch k.
They differ only at the clip's end: the reference reflects the clip where the engine's last
window is zero-padded, and the engine has one window more than the reference has patches unless
the clip's length is a multiple of 0.48 s (the reference drops the last, partial patch).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx

from earshot.bundle import EMBEDDING_OUTPUT, LOGITS_OUTPUT, WAVEFORM_INPUT
from earshot.default_model.config import FRONTEND, SOURCE, FrontendConfig, SourceGraphConfig
from earshot.default_model.frontend import mel_filterbank, periodic_hann
from earshot.engine.windows import WindowSpec, cut

# What the build enforces (int8 variant). Not embedding cosine: the float32 frontend differs from
# numpy's float64 by up to ~7e-4 in log-mel, which moves ~0.01-0.1% of the uint8 inputs by one
# step, and the quantised network turns that into embedding cosines as low as 0.98 (measured;
# torch_audioset's own float32 torch.stft is as far from float64). So the frontend is checked on
# the uint8 patches it hands the network, and the network on those patches against the source.
MAX_PATCH_STEP = 1  # quantisation steps between the graph's uint8 patch and the reference's
MAX_PATCH_MISMATCH = 0.01  # fraction of patch values that may differ by one step (pure tones: 0.3%)
MAX_NETWORK_DIFF = 1e-4  # |bundle - source graph| on the same uint8 patches (embedding and logits)


def engine_spec(config: FrontendConfig = FRONTEND) -> WindowSpec:
    """How the engine cuts clips for the bundle (the manifest's window, hop and context)."""
    return WindowSpec(
        sample_rate=config.sample_rate,
        window_samples=config.window_samples,
        hop_samples=config.hop_samples,
        before=config.context_before,
        after=config.context_after,
        edge="reflect",
    )


def engine_windows(clip: np.ndarray, config: FrontendConfig = FRONTEND) -> np.ndarray:
    """(N, 15600): the engine's windows of `clip` with their context, as the service cuts them."""
    return np.ascontiguousarray(cut(clip.astype(np.float32), engine_spec(config)).samples)


def _magnitudes(frames: np.ndarray, config: FrontendConfig) -> np.ndarray:
    """(frames, 257) |rfft| of 400-sample frames times the periodic Hann (zero-padded to 512)."""
    windowed = frames.astype(np.float64) * periodic_hann(config.win_length)  # (frames, 400)
    return np.abs(np.fft.rfft(windowed, n=config.n_fft, axis=-1))  # the padding's place only moves the phase


def _log_mel(magnitude: np.ndarray, config: FrontendConfig) -> np.ndarray:
    return np.log(magnitude @ mel_filterbank(config) + config.log_offset)  # (frames, 64)


def clip_log_mel(clip: np.ndarray, config: FrontendConfig = FRONTEND) -> np.ndarray:
    """(1 + samples // 160, 64) over the whole clip, torchaudio MelSpectrogram(center=True) + sqrt + log."""
    reach = config.win_length // 2  # frame f covers samples [160 f - 200, 160 f + 200)
    padded = np.pad(clip.astype(np.float64), config.center_pad, mode="reflect")
    count = 1 + (len(padded) - config.n_fft) // config.hop_length
    frames = np.lib.stride_tricks.sliding_window_view(padded[config.center_pad - reach :], config.win_length)
    return _log_mel(_magnitudes(frames[:: config.hop_length][:count], config), config)


def reference_patch_count(samples: int, config: FrontendConfig = FRONTEND) -> int:
    """torch_audioset's patches of a clip: (frames - 96) // 48 + 1 whole patches, none if too short."""
    frames = 1 + samples // config.hop_length
    return max(0, (frames - config.patch_frames) // config.patch_hop_frames + 1)


def whole_clip_patches(clip: np.ndarray, config: FrontendConfig = FRONTEND) -> np.ndarray:
    """(reference_patch_count, 1, 96, 64): torch_audioset's patches, frames over the whole clip."""
    frames = clip_log_mel(clip, config)
    starts = range(0, reference_patch_count(len(clip), config) * config.patch_hop_frames, config.patch_hop_frames)
    patches = [frames[s : s + config.patch_frames] for s in starts]
    return np.array(patches, dtype=np.float32).reshape(-1, 1, config.patch_frames, config.n_mels)


def window_patches(windows: np.ndarray, config: FrontendConfig = FRONTEND) -> np.ndarray:
    """(N, 1, 96, 64): the frontend applied to each window with its context (what the graph computes)."""
    # (N, 96, 400): frame j of a window covers its input samples [160 j, 160 j + 400)
    frames = np.lib.stride_tricks.sliding_window_view(windows, config.win_length, axis=1)[:, :: config.hop_length]
    frames = frames[:, : config.patch_frames]
    return _log_mel(_magnitudes(frames, config), config)[:, None].astype(np.float32)


def quantize_patches(patches: np.ndarray, config: SourceGraphConfig = SOURCE) -> np.ndarray:
    q = np.rint(patches / config.input_scale + config.input_zero_point)
    return np.clip(q, 0, 255).astype(np.uint8)


def source_session(source: onnx.ModelProto, config: SourceGraphConfig = SOURCE):
    """The original graph, with the embedding tensor exposed as a second output."""
    model = onnx.ModelProto()
    model.CopyFrom(source)
    model.graph.output.append(
        onnx.helper.make_tensor_value_info(config.embedding_name, onnx.TensorProto.FLOAT, [1, config.embedding_dim])
    )
    return _session(model)


def run_source(session, patches: np.ndarray, config: SourceGraphConfig = SOURCE) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings (N, 1024), logits (N, 521)) of patches (float, quantised here, or uint8), at batch 1."""
    embeddings, logits = [], []
    for patch in patches:
        q = patch if patch.dtype == np.uint8 else quantize_patches(patch, config)
        feeds = {config.input_name: q.reshape(1, 1, *q.shape[-2:])}
        scores, embedding = session.run([config.output_name, config.embedding_name], feeds)
        logits.append(config.output_scale * (scores[0].astype(np.float32) - config.output_zero_point))
        embeddings.append(embedding[0])
    if not embeddings:  # a clip too short for a single reference patch
        return np.zeros((0, config.embedding_dim), np.float32), np.zeros((0, config.num_labels), np.float32)
    return np.stack(embeddings), np.stack(logits)


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    norms = np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1)
    return (a64 * b64).sum(axis=1) / np.maximum(norms, 1e-30)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # no overflow at the int8 logits' floor of -143


def measure_parity(model: onnx.ModelProto, source: onnx.ModelProto, clips: list[np.ndarray], variant: str) -> dict:
    """The bundle graph `model` against the source graph on the engine's windows of `clips`.

    "per_window": the reference frontend applied to each window with its context, the computation
    the graph is meant to do. For int8 it also compares the uint8 patches the graph hands its
    network, and the network's outputs with the source graph's on those same patches: what the
    build enforces. "whole_clip": torch_audioset's reference over the whole clip, patch k against
    window k for every patch the reference has; the clip embedding and top tag as the service
    pools them (all the engine's windows) against the reference's (all its patches). Reported.
    """
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    names = [EMBEDDING_OUTPUT, LOGITS_OUTPUT]
    if variant == "int8":
        probe.graph.output.append(onnx.helper.make_tensor_value_info(SOURCE.input_name, onnx.TensorProto.UINT8, None))
        names.append(SOURCE.input_name)
    bundle_session, reference = _session(probe), source_session(source)

    keys = ("cos", "top1", "step", "mismatch", "net", "whole", "clip", "clip_top1", "extra")
    found: dict[str, list] = {key: [] for key in keys}
    for clip in clips:
        windows = engine_windows(clip)
        outputs = bundle_session.run(names, {WAVEFORM_INPUT: windows})
        embedding, logits = outputs[0], outputs[1]
        alone = window_patches(windows)
        ref_embedding, ref_logits = run_source(reference, alone)
        found["cos"].append(cosine_rows(ref_embedding, embedding))
        found["top1"].append(ref_logits.argmax(axis=1) == logits.argmax(axis=1))
        if variant == "int8":
            patch_q, ref_q = outputs[2].astype(int), quantize_patches(alone).astype(int)
            found["step"].append(np.abs(patch_q - ref_q).max())
            found["mismatch"].append((patch_q != ref_q).mean())
            net_embedding, net_logits = run_source(reference, outputs[2])
            found["net"].append(max(np.abs(net_embedding - embedding).max(), np.abs(net_logits - logits).max()))
        whole_embedding, whole_logits = run_source(reference, whole_clip_patches(clip))
        found["extra"].append(len(windows) - len(whole_embedding))
        if len(whole_embedding) == 0:
            continue  # shorter than 0.95 s: the reference yields no patch
        found["whole"].append(cosine_rows(whole_embedding, embedding[: len(whole_embedding)]))
        found["clip"].append(cosine_rows(whole_embedding.mean(0)[None], embedding.mean(0)[None]))
        found["clip_top1"].append(sigmoid(whole_logits).mean(0).argmax() == sigmoid(logits).mean(0).argmax())

    cos, whole = np.concatenate(found["cos"]), np.concatenate(found["whole"])
    per_window = {
        "reference": "numpy float64 log-mel of each 0.96 s window from its 200 + 15360 + 40 samples (the "
        "engine's context) + the source graph at batch 1",
        "min_embedding_cosine": _round(cos.min()),
        "mean_embedding_cosine": _round(cos.mean()),
        "top1_agreement": _round(np.concatenate(found["top1"]).mean()),
    }
    report: dict[str, Any] = {"clips": len(clips), "windows": int(len(cos)), "variant": variant, "per_window": per_window}
    if variant == "int8":
        per_window["max_uint8_patch_step"] = int(max(found["step"]))
        per_window["uint8_patch_mismatch_fraction"] = _round(max(found["mismatch"]))
        per_window["network_max_abs_diff_on_same_patches"] = _round(max(found["net"]))
        report["tolerances"] = {
            "max_uint8_patch_step": MAX_PATCH_STEP,
            "uint8_patch_mismatch_fraction": MAX_PATCH_MISMATCH,
            "network_max_abs_diff_on_same_patches": MAX_NETWORK_DIFF,
        }
        report["passed"] = bool(
            int(max(found["step"])) <= MAX_PATCH_STEP
            and _round(max(found["mismatch"])) <= MAX_PATCH_MISMATCH
            and _round(max(found["net"])) <= MAX_NETWORK_DIFF
        )
    report["whole_clip"] = {
        "reference": "torch_audioset in numpy float64: log-mel over the whole clip (reflect padding of 256 at "
        "the clip's ends only), whole patches of 96 frames every 48, + the source graph at batch 1",
        "patches_compared": int(len(whole)),
        "windows_without_a_reference_patch": int(sum(found["extra"])),
        "min_window_embedding_cosine": _round(whole.min()),
        "mean_window_embedding_cosine": _round(whole.mean()),
        "min_clip_embedding_cosine": _round(np.concatenate(found["clip"]).min()),
        "clip_top1_agreement": _round(np.mean(found["clip_top1"])),
    }
    return report


def synthetic_clips(config: FrontendConfig = FRONTEND) -> list[np.ndarray]:
    """Deterministic test signals, 3 s each (a serving install has no recordings at hand)."""
    rate = config.sample_rate
    t = np.arange(3 * rate) / rate
    rng = np.random.default_rng(0)
    chirp = 0.4 * np.sin(2 * np.pi * (200 * t + 600 * t**2))
    tremolo = 0.6 + 0.4 * np.sin(2 * np.pi * 2 * t)
    harmonic = sum(0.3 / k * np.sin(2 * np.pi * 196 * k * t) for k in range(1, 8)) * tremolo
    clicks = np.zeros_like(t)
    clicks[:: rate // 4] = 0.9
    clicks = np.convolve(clicks, np.exp(-np.arange(400) / 60.0) * rng.standard_normal(400), mode="same")
    noise = 0.05 * rng.standard_normal(len(t)) * (np.sin(2 * np.pi * 0.7 * t) > 0)
    return [signal.astype(np.float32) for signal in (chirp, harmonic, clicks, noise)]


def _session(model: onnx.ModelProto):
    """Integer graphs in their exact form for this CPU: the reference must not saturate (int8.py)."""
    from earshot.engine.int8 import exact_integer_session

    return exact_integer_session(model)


def _round(value) -> float:
    return round(float(value), 6)
