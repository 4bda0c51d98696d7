"""Smoke check: the waveform model exports with the TorchScript-based exporter (opset 17, dynamic
batch, scaled_dot_product_attention inside) and ONNX Runtime reproduces torch. The full exporter
(precisions, parity report, bundle) is tested with earshot/export."""

from __future__ import annotations

import numpy as np
import onnxruntime
import pytest
import torch

from earshot_models.checkpoints.ast import read_hf_checkpoint
from tests.models.ast_fixtures import CLIPS, NON_DEFAULT, window_batch

TOLERANCE = 1e-4
# The TorchScript-based exporter is deprecated in torch 2.9+, and is the one we use on purpose (see
# export/earshot_export/onnx_export.py): its node names keep module paths, its graph is one ORT fuses.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_exports_and_onnx_runtime_matches_torch(make_hf_checkpoint, clips, tmp_path):
    directory, _ = make_hf_checkpoint(seed=6, **NON_DEFAULT)
    model = read_hf_checkpoint(directory).build()
    window = model.frontend.window_samples
    path = tmp_path / "model.onnx"
    example = window_batch([clips[CLIPS[0]], clips[CLIPS[3]]], window)
    names = ["waveform", "num_samples", "embedding", "logits"]
    torch.onnx.export(
        model,
        example,
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=names[:2],
        output_names=names[2:],
        dynamic_axes={name: {0: "batch"} for name in names},
    )
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    nodes = _node_names(path)
    assert any(node.startswith("/frontend/") for node in nodes)
    assert any(node.startswith("/encoder/blocks.0/attn/") for node in nodes)

    waveform, num_samples = window_batch([clips[name] for name in CLIPS], window)  # another batch size
    embedding, logits = session.run(None, {"waveform": waveform.numpy(), "num_samples": num_samples.numpy()})
    with torch.no_grad():
        expected_embedding, expected_logits = model(waveform, num_samples)
    assert logits.shape == (len(CLIPS), 7)
    np.testing.assert_allclose(logits, expected_logits.numpy(), rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(embedding, expected_embedding.numpy(), rtol=0, atol=TOLERANCE)


def test_onnx_runtime_fuses_every_attention_and_gelu(make_hf_checkpoint, clips, tmp_path):
    """The export path of Attention is the pattern ONNX Runtime's transformer optimizer fuses."""
    from onnxruntime.transformers import optimizer

    directory, _ = make_hf_checkpoint(seed=7, **NON_DEFAULT)
    model = read_hf_checkpoint(directory).build()
    window = model.frontend.window_samples
    waveform, num_samples = window_batch([clips[name] for name in CLIPS[:2]], window)
    path = tmp_path / "model.onnx"
    torch.onnx.export(
        model,
        (waveform, num_samples),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=["waveform", "num_samples"],
        output_names=["embedding", "logits"],
        dynamic_axes={name: {0: "batch"} for name in ("waveform", "num_samples", "embedding", "logits")},
    )
    config = model.encoder.config
    optimized = optimizer.optimize_model(
        str(path), model_type="vit", num_heads=config.num_heads, hidden_size=config.embed_dim, opt_level=0
    )
    fused = optimized.get_fused_operator_statistics()
    assert fused["Attention"] == config.depth
    assert fused["BiasGelu"] + fused["Gelu"] == config.depth
    optimized.save_model_to_file(str(tmp_path / "fused.onnx"))
    session = onnxruntime.InferenceSession(str(tmp_path / "fused.onnx"), providers=["CPUExecutionProvider"])
    _, logits = session.run(None, {"waveform": waveform.numpy(), "num_samples": num_samples.numpy()})
    with torch.no_grad():
        _, expected_logits = model(waveform, num_samples)
    np.testing.assert_allclose(logits, expected_logits.numpy(), rtol=0, atol=TOLERANCE)


def _node_names(path) -> list[str]:
    import onnx

    return [node.name for node in onnx.load(str(path)).graph.node]
