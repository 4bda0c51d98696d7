"""`earshot export` end to end: checkpoint -> bundle (fp32 / fp16 / int8) with parity on real clips."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from earshot import bundle  # noqa: E402
from earshot.cli import main  # noqa: E402
from earshot.engine import int8
from earshot.engine.runner import RunnerConfig
from earshot.engine.self_test import open_runner
from earshot_export.loaders.ast import load_hf  # noqa: E402
from earshot_export.onnx_export import export_bundle  # noqa: E402
from earshot_export.parity import ParityError  # noqa: E402
from tests.models.ast_fixtures import TINY, randomise_unit_scale  # noqa: E402

PARITY_CLIPS = ["speech_spanish_16s.ogg", "music_piano.flac", "bird_crow.ogg", "speech_french.ogg", "choir.flac"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from transformers import ASTConfig, ASTForAudioClassification

    labels = {0: "Speech", 1: "Music", 2: "Bird", 3: "Silence"}
    config = ASTConfig(**TINY, max_length=400, id2label=labels, label2id={v: k for k, v in labels.items()})
    model = ASTForAudioClassification(config)
    randomise_unit_scale(model, seed=3)
    directory = tmp_path_factory.mktemp("hf") / "ast-tiny"
    model.save_pretrained(directory)
    return directory


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_export_writes_a_verified_bundle_that_passes_parity(checkpoint, audio_dir, tmp_path, capsys, precision):
    out = tmp_path / f"bundle-{precision}"
    parity_args = [arg for clip in PARITY_CLIPS for arg in ("--parity-audio", str(audio_dir / clip))]
    code = main(["export", f"hf:{checkpoint}", "--out", str(out), "--precision", precision,
                 "--name", f"tiny-{precision}", *parity_args])
    assert code == 0, capsys.readouterr().err
    printed = json.loads(capsys.readouterr().out)
    assert printed["name"] == f"tiny-{precision}" and printed["parity"]["passed"] is True

    loaded = bundle.load(out, verify=True)
    manifest = loaded.manifest
    assert manifest.precision == precision and manifest.family == "ast"
    assert loaded.labels == ["Speech", "Music", "Bird", "Silence"]
    assert manifest.padding.mode == "frames" and manifest.takes_num_samples
    assert manifest.window_samples == 399 * 160 + 400 and manifest.sample_rate == 16000
    assert manifest.parity["windows"] == len(PARITY_CLIPS)
    if precision == "fp32":
        assert manifest.parity["max_logits_abs_diff"] <= 1e-4
    else:
        assert manifest.parity["min_embedding_cosine"] >= 0.99 and manifest.parity["top1_agreement"] == 1.0
    assert manifest.providers == {}  # deployment options are the runner's (engine/runner.py), not the bundle's
    assert manifest.source["sha256"] == bundle.sha256_file(checkpoint / "model.safetensors")
    # the self-test probe, computed with the reference arithmetic, passes on this machine's runner
    assert manifest.probe["file"] in manifest.files and manifest.probe["windows"] == 3
    assert manifest.parity["machine"]["cpu"]["machine"] and manifest.probe["export_machine"]["arithmetic"]
    runner, result = open_runner(loaded, RunnerConfig(("cpu",), 1, 4, tmp_path / "cache"))
    assert result.status == "passed" and result.tolerance == {"fp32": 0.9999, "fp16": 0.999, "int8": 0.999}[precision]

    # the graph's batch axis is dynamic, and rows do not leak into each other
    session = ort.InferenceSession(str(loaded.model_path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    waveform = (0.1 * rng.standard_normal((3, manifest.window_samples))).astype(np.float32)
    num_samples = np.array([manifest.window_samples, 16000, 800], dtype=np.int64)
    together = session.run(None, {"waveform": waveform, "num_samples": num_samples})
    alone = session.run(None, {"waveform": waveform[1:2], "num_samples": num_samples[1:2]})
    if precision == "int8":
        # dynamic quantisation picks one activation scale per batch: batch-mates move a window's
        # output within quantisation noise (the manifest's notes say so), never further
        a, b = together[0][1].astype(np.float64), alone[0][0].astype(np.float64)
        assert a @ b / np.linalg.norm(a) / np.linalg.norm(b) >= 0.999
    else:
        np.testing.assert_allclose(together[1][1:2], alone[1], atol=1e-4 if precision == "fp32" else 1e-2)


def test_int8_quantises_the_encoder_and_keeps_frontend_and_patch_conv_float(checkpoint, tmp_path):
    import onnx

    model = load_hf(str(checkpoint), name="q")
    loaded = export_bundle(model, tmp_path / "q", "int8")
    graph = onnx.load(str(loaded.model_path)).graph
    ops = [n.op_type for n in graph.node]
    layers = TINY["num_hidden_layers"]
    assert ops.count("QAttention") == layers  # fused attention, its qkv projection in int8
    assert ops.count("MatMulInteger") == 3 * layers  # output projection, fc1, fc2 of each block
    integer = [n for n in graph.node if n.op_type in ("QAttention", "MatMulInteger", "DynamicQuantizeLinear")]
    assert all("/frontend/" not in n.name for n in integer)
    assert any(n.op_type == "Conv" and "patch" in n.name for n in graph.node)  # the patch embedding stays float
    # 7-bit weights: u8 x s8 pair sums cannot saturate on any CPU, so no runner needs another form
    initializers = {t.name: t for t in graph.initializer}
    weights = [onnx.numpy_helper.to_array(initializers[n.input[1]]) for n in integer if n.op_type != "DynamicQuantizeLinear"]
    assert len(weights) == 4 * layers and all(w.dtype == np.int8 and np.abs(w.astype(int)).max() <= 64 for w in weights)
    assert int8.saturating_weights(onnx.load(str(loaded.model_path))) == []


def test_parity_failure_exits_non_zero_and_writes_nothing(checkpoint, tmp_path):
    """An export path that differs from the eager one (the kind of bug parity exists for) is caught."""

    class DriftsWhenExported(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, waveform, num_samples):
            embedding, logits = self.inner(waveform, num_samples)
            if torch.onnx.is_in_onnx_export():
                logits = logits + 1e-2
            return embedding, logits

    model = load_hf(str(checkpoint), name="drift")
    model.module = DriftsWhenExported(model.module)
    out = tmp_path / "drift"
    with pytest.raises(ParityError, match=r"\|logits diff\| 0.01 > 0.0001"):
        export_bundle(model, out, "fp32")
    assert not out.exists()


def test_corrupt_and_mismatched_checkpoints_fail_with_a_clear_message(checkpoint, tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((checkpoint / "config.json").read_text())
    (broken / "model.safetensors").write_bytes(b"\x00garbage, not safetensors")
    assert main(["export", f"hf:{broken}", "--out", str(tmp_path / "b")]) == 2
    message = capsys.readouterr().err
    assert message.startswith("earshot export: ") and "model.safetensors" in message
    assert "Traceback" not in message

    original = tmp_path / "model.pth"
    original.write_bytes(b"PK\x03\x04 truncated zip")
    assert main(["export", f"ast:{original}", "--out", str(tmp_path / "c")]) == 2
    assert "model.pth" in capsys.readouterr().err
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


def test_unknown_scheme_and_existing_output_are_usage_errors(checkpoint, tmp_path, capsys):
    assert main(["export", "nosuch:thing", "--out", str(tmp_path / "x")]) == 2
    assert "SOURCE must be <scheme>:<reference>" in capsys.readouterr().err
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    assert main(["export", f"hf:{checkpoint}", "--out", str(occupied)]) == 2
    assert "--force" in capsys.readouterr().err and (occupied / "keep.txt").exists()
