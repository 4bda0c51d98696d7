"""HTS-AT's window attention (relative position bias + shifted-window mask) fused into ONNX Runtime's
`com.microsoft.MultiHeadAttention`: one per Swin block, same outputs as the unfused graph, and both
bundles pass the exporter's parity check against PyTorch."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from earshot_export.fusion import fused_attention_per_scope
from earshot_export.loaders.clap import load_clap
from earshot_export.onnx_export import export_bundle
from earshot_export.parity import run_onnx
from tests.models.clap_fixtures import TINY_AUDIO, make_clap_dir, read_clip

CLIPS = ("speech_french.ogg", "music_piano.flac")


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, audio_dir):
    root = tmp_path_factory.mktemp("clap-fusion")
    directory = root / "clap-tiny"
    make_clap_dir(directory, seed=5)
    model = load_clap(str(directory))
    clips = [read_clip(audio_dir / name) for name in CLIPS]
    fused = export_bundle(model, root / "fused", parity_audio=clips, fuse=True)
    plain = export_bundle(model, root / "plain", parity_audio=clips, fuse=False)
    return fused, plain, clips


def graph(built) -> onnx.ModelProto:
    return onnx.load(str(built.path / built.manifest.model_file))


def test_every_swin_block_is_one_multi_head_attention(bundles):
    fused, plain, _ = bundles
    per_stage = fused_attention_per_scope(graph(fused))
    assert per_stage == {f"stages.{stage}": depth for stage, depth in enumerate(TINY_AUDIO["depths"])}
    assert fused.manifest.notes["fused_operators"] == {"MultiHeadAttention": sum(TINY_AUDIO["depths"])}
    softmaxes = [node for node in graph(fused).graph.node if node.op_type == "Softmax" and "/attn/" in node.name]
    assert not softmaxes  # nothing of the unfused attention is left
    plain_graph = graph(plain)
    assert {opset.domain for opset in plain_graph.opset_import} <= {"", "ai.onnx"}
    assert all(node.domain in ("", "ai.onnx") for node in plain_graph.graph.node)
    assert sum(node.op_type == "Softmax" and "/attn/" in node.name for node in plain_graph.graph.node) == sum(
        TINY_AUDIO["depths"])


def test_fused_and_unfused_agree_and_pass_parity(bundles):
    fused, plain, clips = bundles
    assert fused.manifest.parity["passed"] and plain.manifest.parity["passed"]
    window = fused.manifest.window_samples
    waveform = np.zeros((3, window), dtype=np.float32)
    num_samples = np.array([window, window, window // 3], dtype=np.int64)
    for row, clip in enumerate([*clips, clips[0]]):
        count = min(len(clip), int(num_samples[row]))
        waveform[row, :count] = clip[:count]
    got = run_onnx(fused.path / fused.manifest.model_file, waveform, num_samples)
    want = run_onnx(plain.path / plain.manifest.model_file, waveform, num_samples)
    np.testing.assert_allclose(got["embedding"], want["embedding"], rtol=0, atol=1e-5)
