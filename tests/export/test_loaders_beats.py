"""`earshot export beats:<file.pt>`: bundles that reproduce the golden vectors through ONNX Runtime."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from earshot import bundle  # noqa: E402
from earshot.cli import main  # noqa: E402
from earshot_export.loaders.beats import load_beats  # noqa: E402
from earshot_export.onnx_export import export_bundle  # noqa: E402
from earshot_export.parity import cosine_rows, run_onnx  # noqa: E402
from earshot_models.checkpoints import CheckpointError  # noqa: E402
from tests.models.ast_fixtures import read_clip, window_batch  # noqa: E402
from tests.models.beats_fixtures import GOLDEN_SAMPLES, NON_DEFAULT_CFG, golden_paths, load_golden, write_beats_file  # noqa: E402

END_TO_END_ATOL = 2e-3
GOLDEN_SECONDS = GOLDEN_SAMPLES / 16000
# Real clips for the exporter's parity check. Its default synthetic signals (a pure chirp and pure
# harmonics, no noise floor) leave BEATs' quiet mel bins at float32 rounding noise (the 2**15 scale
# puts the log floor far below it), where PyTorch and ONNX Runtime round differently.
PARITY_CLIPS = ("music_piano.flac", "speech_french.ogg", "short_50ms.wav")


def parity_flags(audio_dir: Path) -> list[str]:
    return [flag for name in PARITY_CLIPS for flag in ("--parity-audio", str(audio_dir / name))]


@pytest.fixture(scope="module")
def golden(golden_dir):
    return load_golden(golden_dir)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def golden_window(golden, window_samples: int) -> tuple[np.ndarray, np.ndarray]:
    waveform = np.ascontiguousarray(golden["wave"][:, :window_samples])
    return waveform, np.full(len(waveform), window_samples, dtype=np.int64)


def test_load_beats_describes_the_checkpoint(golden_dir):
    paths = golden_paths(golden_dir)
    model = load_beats(str(paths["finetuned"]))
    assert model.name == "beats-tiny-a-finetuned" and model.family == "beats"
    assert (model.sample_rate, model.window_samples, model.hop_samples) == (16000, 991 * 160 + 400, 992 * 160)
    assert model.embedding_dim == 96 and model.tag_activation == "sigmoid" and model.padding.mode == "frames"
    assert model.labels[:2] == ["Speech", "Music"] and model.num_labels == 11
    assert model.source == {
        "uri": str(paths["finetuned"].resolve()),
        "sha256": hashlib.sha256(paths["finetuned"].read_bytes()).hexdigest(),
        "format": "beats-pt",
    }
    assert model.notes["tags"].startswith("trained") and model.notes["tag_kind"] == "trained"
    pretrained = load_beats(str(paths["pretrained"]), name="bp", window_seconds=2.0)
    assert pretrained.name == "bp" and pretrained.labels == [] and pretrained.window_samples == 191 * 160 + 400
    assert pretrained.notes["tag_kind"] == "none"


def test_labels_files_map_audioset_ids_or_replace_labels(tmp_path):
    path = write_beats_file(tmp_path / "ft.pt", NON_DEFAULT_CFG, seed=1)  # labels /m/00000 ... /m/00004
    names = tmp_path / "class_labels_indices.csv"
    rows = [f'{4 - i},/m/{i:05d},"Name {i}, with a comma"' for i in range(5)]
    names.write_text("index,mid,display_name\n" + "\n".join(rows) + "\n", encoding="utf-8")
    mapped = load_beats(str(path), window_seconds=1.0, labels_file=names)
    assert mapped.labels == [f"Name {i}, with a comma" for i in range(5)]  # by id, not by the file's order
    plain = tmp_path / "labels.txt"
    plain.write_text("a\nb\nc\nd\ne\n", encoding="utf-8")
    assert load_beats(str(path), window_seconds=1.0, labels_file=plain).labels == list("abcde")
    plain.write_text("a\nb\n", encoding="utf-8")
    with pytest.raises(CheckpointError, match="2 labels given for a predictor with 5 classes"):
        load_beats(str(path), window_seconds=1.0, labels_file=plain)


def test_audioset_ids_of_a_527_way_head_become_display_names(tmp_path):
    cfg = {**NON_DEFAULT_CFG, "predictor_class": 527}
    path = write_beats_file(tmp_path / "as2m.pt", cfg, seed=2)  # label_dict: /m/00000 ... /m/00526
    model = load_beats(str(path), window_seconds=1.0)
    assert model.labels[:2] == ["Speech", "Male speech, man speaking"] and model.num_labels == 527
    assert model.notes["label_ids"][:2] == ["/m/00000", "/m/00001"]
    assert load_beats(str(write_beats_file(tmp_path / "small.pt", NON_DEFAULT_CFG)), window_seconds=1.0).labels[0] == (
        "/m/00000"  # not a 527-way AudioSet head: the ids stay
    )


def test_export_cli_reproduces_the_golden_tags(golden_dir, golden, tmp_path, audio_dir, capsys):
    out = tmp_path / "beats-ft"
    source = f"beats:{golden_paths(golden_dir)['finetuned']}"
    flags = ["--out", str(out), "--window-seconds", str(GOLDEN_SECONDS), *parity_flags(audio_dir)]
    assert main(["export", source, *flags]) == 0
    loaded = bundle.load(out, verify=True)
    manifest = loaded.manifest
    assert manifest.family == "beats" and manifest.num_labels == 11 and manifest.parity["passed"]
    assert manifest.padding.mode == "frames" and manifest.tag_activation == "sigmoid"
    waveform, num_samples = golden_window(golden, manifest.window_samples)
    got = run_onnx(out / manifest.model_file, waveform, num_samples)
    np.testing.assert_allclose(sigmoid(got["logits"]), golden["finetuned_output"], rtol=0, atol=END_TO_END_ATOL)


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_pretrained_bundles_reproduce_the_golden_embedding(golden_dir, golden, tmp_path, precision):
    model = load_beats(str(golden_paths(golden_dir)["pretrained"]), window_seconds=GOLDEN_SECONDS)
    clips = [golden["wave"][row] for row in range(3)]
    built = export_bundle(model, tmp_path / precision, precision, parity_audio=clips)
    assert built.manifest.parity["passed"] and not built.manifest.has_logits
    waveform, num_samples = golden_window(golden, model.window_samples)
    embedding = run_onnx(built.path / built.manifest.model_file, waveform, num_samples)["embedding"]
    expected = golden["pretrained_output"].mean(axis=1)  # (3, 96): the mean of the reference's tokens
    if precision == "fp32":
        np.testing.assert_allclose(embedding, expected, rtol=0, atol=END_TO_END_ATOL)
    else:
        assert cosine_rows(embedding, expected).min() >= 0.99


def test_non_default_configuration_through_onnx(tmp_path, audio_dir, capsys):
    """A BEATs file of another shape (3 layers, 48 wide, odd position-conv kernel, ungated bias, no
    deep norm), a 3 s window, and real clips of which two end inside the window (padding mask)."""
    path = write_beats_file(tmp_path / "beats-non-default.pt", NON_DEFAULT_CFG, seed=5)
    out = tmp_path / "bundle"
    assert main(["export", f"beats:{path}", "--out", str(out), "--window-seconds", "3", *parity_flags(audio_dir)]) == 0
    manifest = bundle.load(out, verify=True).manifest
    assert (manifest.window_samples, manifest.num_labels, manifest.embedding_dim) == (287 * 160 + 400, 5, 48)
    module = load_beats(str(path), window_seconds=3.0).module
    waves = [read_clip(audio_dir / name) for name in ("speech_spanish_16s.ogg", "bird_crow.ogg", "silence_1s.wav")]
    waveform, num_samples = window_batch(waves, manifest.window_samples)
    assert num_samples.tolist()[1:] != [manifest.window_samples] * 2  # two clips end inside the window
    with torch.no_grad():
        embedding, logits = module(waveform, num_samples)
    got = run_onnx(out / manifest.model_file, waveform.numpy(), num_samples.numpy())
    np.testing.assert_allclose(got["embedding"], embedding.numpy(), rtol=0, atol=1e-4)
    np.testing.assert_allclose(got["logits"], logits.numpy(), rtol=0, atol=1e-4)
