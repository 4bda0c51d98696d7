"""Small real bundles for the service tests, built with onnx.helper (no PyTorch), and numpy
references of what their graphs compute, so tests know the exact output for every window."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from earshot import bundle as bundle_format
from earshot.engine.self_test import write_probe

SAMPLE_RATE = 16_000
WINDOW_SAMPLES = 1_600  # 0.1 s at 16 kHz
FRAME_SAMPLES = 100  # 6.25 ms frames inside the window
FRAMES = WINDOW_SAMPLES // FRAME_SAMPLES  # 16
EMBEDDING_DIM = 8
LABELS = ["Speech", "Music", "Bird", "Silence"]
OPSET = 17


def _weights(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "w_embed": rng.standard_normal((FRAMES, EMBEDDING_DIM)).astype(np.float32),  # (16, 8)
        "b_embed": rng.standard_normal((EMBEDDING_DIM,)).astype(np.float32),
        "w_logits": rng.standard_normal((FRAMES, len(LABELS))).astype(np.float32) * 8,  # (16, 4)
        "b_logits": rng.standard_normal((len(LABELS),)).astype(np.float32),
    }


TINY_WEIGHTS = _weights(seed=7)


def tiny_reference(windows: np.ndarray, num_samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What the tiny graph computes: windows (B, 1600), num_samples (B,) -> embedding (B, 8), logits (B, 4)."""
    frames = windows.reshape(-1, FRAMES, FRAME_SAMPLES)  # (B, 16, 100)
    features = np.abs(frames).mean(axis=2)  # (B, 16)
    real = np.arange(FRAMES)[None, :] * FRAME_SAMPLES < num_samples[:, None]  # (B, 16)
    features = features * real
    w = TINY_WEIGHTS
    return features @ w["w_embed"] + w["b_embed"], features @ w["w_logits"] + w["b_logits"]


def pooled(values: np.ndarray, clip_samples: int, window: int = WINDOW_SAMPLES, hop: int = WINDOW_SAMPLES // 2) -> np.ndarray:
    """values (n_windows, dim) of a clip of clip_samples -> (dim,): the clip's answer by the pooling
    rule, written out from the clip's length: every window weighs 1 but a last one, which weighs the
    share of a hop that it reaches past the window before it."""
    weights = np.ones(values.shape[0])
    if values.shape[0] > 1:
        past_previous = clip_samples - ((values.shape[0] - 2) * hop + window)
        weights[-1] = min(past_previous, hop) / hop
    return np.average(values.astype(np.float64), axis=0, weights=weights)


def _tiny_graph() -> onnx.ModelProto:
    w = TINY_WEIGHTS
    initializers = [numpy_helper.from_array(value, name) for name, value in w.items()] + [
        numpy_helper.from_array(np.array([-1, FRAMES, FRAME_SAMPLES], dtype=np.int64), "frame_shape"),
        numpy_helper.from_array(np.arange(FRAMES, dtype=np.int64) * FRAME_SAMPLES, "frame_starts"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis_1"),
    ]
    nodes = [
        helper.make_node("Reshape", ["waveform", "frame_shape"], ["frames"]),  # (B, 16, 100)
        helper.make_node("Abs", ["frames"], ["magnitude"]),
        helper.make_node("ReduceMean", ["magnitude"], ["features_all"], axes=[2], keepdims=0),  # (B, 16)
        helper.make_node("Unsqueeze", ["num_samples", "axis_1"], ["num_samples_column"]),  # (B, 1)
        helper.make_node("Less", ["frame_starts", "num_samples_column"], ["is_real"]),  # (B, 16)
        helper.make_node("Cast", ["is_real"], ["real"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["features_all", "real"], ["features"]),
        helper.make_node("MatMul", ["features", "w_embed"], ["embed_raw"]),  # (B, 8)
        helper.make_node("Add", ["embed_raw", "b_embed"], ["embedding"]),
        helper.make_node("MatMul", ["features", "w_logits"], ["logits_raw"]),  # (B, 4)
        helper.make_node("Add", ["logits_raw", "b_logits"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        inputs=[
            helper.make_tensor_value_info("waveform", TensorProto.FLOAT, ["batch", WINDOW_SAMPLES]),
            helper.make_tensor_value_info("num_samples", TensorProto.INT64, ["batch"]),
        ],
        outputs=[
            helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", EMBEDDING_DIM]),
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", len(LABELS)]),
        ],
        initializer=initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=9)


def _slow_graph(rounds: int) -> onnx.ModelProto:
    """Heavy on purpose: `rounds` dense 1600x1600 layers per window (about 5 MFLOP each)."""
    rng = np.random.default_rng(11)
    dense = (rng.standard_normal((WINDOW_SAMPLES, WINDOW_SAMPLES)) / np.sqrt(WINDOW_SAMPLES)).astype(np.float32)
    initializers = [
        numpy_helper.from_array(dense, "dense"),
        numpy_helper.from_array(rng.standard_normal((WINDOW_SAMPLES, EMBEDDING_DIM)).astype(np.float32), "w_embed"),
        numpy_helper.from_array(rng.standard_normal((WINDOW_SAMPLES, len(LABELS))).astype(np.float32), "w_logits"),
    ]
    nodes, previous = [], "waveform"
    for index in range(rounds):
        nodes.append(helper.make_node("MatMul", [previous, "dense"], [f"mixed_{index}"]))  # (B, 1600)
        nodes.append(helper.make_node("Tanh", [f"mixed_{index}"], [f"hidden_{index}"]))
        previous = f"hidden_{index}"
    nodes.append(helper.make_node("MatMul", [previous, "w_embed"], ["embedding"]))  # (B, 8)
    nodes.append(helper.make_node("MatMul", [previous, "w_logits"], ["logits"]))  # (B, 4)
    graph = helper.make_graph(
        nodes,
        "slow",
        inputs=[helper.make_tensor_value_info("waveform", TensorProto.FLOAT, ["batch", WINDOW_SAMPLES])],
        outputs=[
            helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", EMBEDDING_DIM]),
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", len(LABELS)]),
        ],
        initializer=initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=9)


def _manifest(name: str, takes_num_samples: bool, hop_samples: int) -> bundle_format.Manifest:
    inputs = [bundle_format.TensorSpec("waveform", "float32", ["batch", WINDOW_SAMPLES])]
    if takes_num_samples:
        inputs.append(bundle_format.TensorSpec("num_samples", "int64", ["batch"]))
    return bundle_format.Manifest(
        name=name,
        family="test",
        sample_rate=SAMPLE_RATE,
        window_samples=WINDOW_SAMPLES,
        hop_samples=hop_samples,
        embedding_dim=EMBEDDING_DIM,
        num_labels=len(LABELS),
        precision="fp32",
        padding=bundle_format.Padding(
            mode="frames" if takes_num_samples else "zeros",
            description="frames past num_samples are zeroed" if takes_num_samples else "zero-padded waveform",
        ),
        inputs=inputs,
        outputs=[
            bundle_format.TensorSpec("embedding", "float32", ["batch", EMBEDDING_DIM]),
            bundle_format.TensorSpec("logits", "float32", ["batch", len(LABELS)]),
        ],
        tag_activation="sigmoid",
    )


def write_tiny_bundle(
    root: Path, name: str = "tiny", hop_samples: int = 800, probe: bool = True
) -> bundle_format.Bundle:
    """Windows of 0.1 s with a hop of 0.05 s (half overlap), frame-masked by num_samples."""
    root.mkdir(parents=True, exist_ok=True)
    onnx.save(_tiny_graph(), str(root / bundle_format.MODEL_FILE))
    return _finish(root, _manifest(name, takes_num_samples=True, hop_samples=hop_samples), probe)


def write_slow_bundle(root: Path, name: str = "slow", rounds: int = 200, probe: bool = True) -> bundle_format.Bundle:
    """Windows of 0.1 s, no overlap, about 1 GFLOP per window (milliseconds on one core)."""
    root.mkdir(parents=True, exist_ok=True)
    onnx.save(_slow_graph(rounds), str(root / bundle_format.MODEL_FILE))
    return _finish(root, _manifest(name, takes_num_samples=False, hop_samples=WINDOW_SAMPLES), probe)


def _finish(root: Path, manifest: bundle_format.Manifest, probe: bool) -> bundle_format.Bundle:
    """Write the self-test probe (as `earshot export` does) unless asked for a bundle without one."""
    if probe:
        entry = write_probe(root, root / bundle_format.MODEL_FILE, "fp32", WINDOW_SAMPLES, bundle_format.Context(),
                            SAMPLE_RATE)
        manifest = dataclasses.replace(manifest, probe=entry)
    return bundle_format.write(root, manifest, LABELS)


# -- a bundle with frame features (the speech encoders' shape) ----------------------------------------
FRAME_DIM = 6
FRAME_WEIGHTS = np.random.default_rng(13).standard_normal((FRAME_SAMPLES, FRAME_DIM)).astype(np.float32)


def frames_reference(windows: np.ndarray, num_samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What the frames graph computes: windows (B, 1600), num_samples (B,) -> embedding (B, 6) =
    the mean of the real frames, frames (B, 16, 6) = each 100-sample frame times a matrix (zero past num_samples)."""
    frames = windows.reshape(-1, FRAMES, FRAME_SAMPLES) @ FRAME_WEIGHTS  # (B, 16, 6)
    real = (np.arange(FRAMES)[None, :] * FRAME_SAMPLES < num_samples[:, None]).astype(np.float32)  # (B, 16)
    frames = frames * real[:, :, None]
    return frames.sum(axis=1) / np.maximum(real.sum(axis=1, keepdims=True), 1.0), frames


def _frames_graph() -> onnx.ModelProto:
    initializers = [
        numpy_helper.from_array(FRAME_WEIGHTS, "w_frame"),
        numpy_helper.from_array(np.array([-1, FRAMES, FRAME_SAMPLES], dtype=np.int64), "frame_shape"),
        numpy_helper.from_array(np.arange(FRAMES, dtype=np.int64) * FRAME_SAMPLES, "frame_starts"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis_1"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), "axis_2"),
        numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one"),
    ]
    nodes = [
        helper.make_node("Reshape", ["waveform", "frame_shape"], ["cells"]),  # (B, 16, 100)
        helper.make_node("MatMul", ["cells", "w_frame"], ["frames_all"]),  # (B, 16, 6)
        helper.make_node("Unsqueeze", ["num_samples", "axis_1"], ["num_samples_column"]),  # (B, 1)
        helper.make_node("Less", ["frame_starts", "num_samples_column"], ["is_real"]),  # (B, 16)
        helper.make_node("Cast", ["is_real"], ["real"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["real", "axis_2"], ["real_3d"]),  # (B, 16, 1)
        helper.make_node("Mul", ["frames_all", "real_3d"], ["frames"]),
        helper.make_node("ReduceSum", ["frames", "axis_1"], ["frame_sum"], keepdims=0),  # (B, 6)
        helper.make_node("ReduceSum", ["real", "axis_1"], ["real_count"], keepdims=1),  # (B, 1)
        helper.make_node("Max", ["real_count", "one"], ["count"]),
        helper.make_node("Div", ["frame_sum", "count"], ["embedding"]),
    ]
    graph = helper.make_graph(
        nodes,
        "frames",
        inputs=[
            helper.make_tensor_value_info("waveform", TensorProto.FLOAT, ["batch", WINDOW_SAMPLES]),
            helper.make_tensor_value_info("num_samples", TensorProto.INT64, ["batch"]),
        ],
        outputs=[
            helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", FRAME_DIM]),
            helper.make_tensor_value_info("frames", TensorProto.FLOAT, ["batch", FRAMES, FRAME_DIM]),
        ],
        initializer=initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=9)


def write_frames_bundle(root: Path, name: str = "framed", hop_samples: int = WINDOW_SAMPLES) -> bundle_format.Bundle:
    """Windows of 0.1 s (hop: no overlap by default), 16 frames of 6.25 ms each, no tags."""
    root.mkdir(parents=True, exist_ok=True)
    onnx.save(_frames_graph(), str(root / bundle_format.MODEL_FILE))
    manifest = dataclasses.replace(
        _manifest(name, takes_num_samples=True, hop_samples=hop_samples),
        embedding_dim=FRAME_DIM,
        num_labels=0,
        outputs=[
            bundle_format.TensorSpec("embedding", "float32", ["batch", FRAME_DIM]),
            bundle_format.TensorSpec("frames", "float32", ["batch", FRAMES, FRAME_DIM]),
        ],
        frame_grid=bundle_format.FrameGrid(hop_samples=FRAME_SAMPLES, receptive_samples=FRAME_SAMPLES, count=FRAMES),
    )
    entry = write_probe(root, root / bundle_format.MODEL_FILE, "fp32", WINDOW_SAMPLES, bundle_format.Context(), SAMPLE_RATE)
    return bundle_format.write(root, dataclasses.replace(manifest, probe=entry), [])
