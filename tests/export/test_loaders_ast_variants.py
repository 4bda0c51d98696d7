"""`earshot export passt: / audiomae: / ssast:`: bundles from the golden checkpoints reproduce the
golden outputs wave in, through ONNX Runtime; bundles of configurations of our own match PyTorch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from earshot import bundle  # noqa: E402
from earshot.cli import main  # noqa: E402
from earshot_export.audioset import audioset_labels  # noqa: E402
from earshot_export.loaders.audiomae import load_audiomae  # noqa: E402
from earshot_export.loaders.passt import load_passt  # noqa: E402
from earshot_export.loaders.ssast import load_ssast  # noqa: E402
from earshot_export.onnx_export import export_bundle  # noqa: E402
from earshot_export.sources import ExportOptions, SourceError, load_torch_model, parse_source  # noqa: E402
from tests.models import variant_references as ref  # noqa: E402

WAVE_IN_TOLERANCE = 2e-3  # ../shared/golden/README.md, end to end
ONNX_TOLERANCE = 1e-4  # ONNX Runtime against PyTorch, same input
# The TorchScript-based exporter is deprecated in torch 2.9+ and used on purpose (see onnx_export.py).
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")

GOLDEN = {  # scheme: (file, extra CLI flags, sample rate, window samples, padding mode)
    "passt": ("passt/passt-tiny-a.pt", ["--window-seconds", "5"], 32000, 160000, "zeros"),
    "audiomae": ("audiomae/audiomae-tiny-a.pth", [], 16000, 997 * 160 + 400, "frames"),  # default 10 s
    "ssast": ("ssast/ssast-tiny-a.pth", ["--window-seconds", "6"], 16000, 597 * 160 + 400, "frames"),
}


def run_bundle(path: Path, waveform: np.ndarray, num_samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    session = ort.InferenceSession(str(path / bundle.MODEL_FILE), providers=["CPUExecutionProvider"])
    embedding, logits = session.run(None, {"waveform": waveform, "num_samples": num_samples})
    return embedding, logits


@pytest.mark.parametrize("scheme", list(GOLDEN))
def test_export_cli_reproduces_the_golden_outputs(scheme, golden_dir, tmp_path, capsys):
    file, flags, rate, window, padding = GOLDEN[scheme]
    out = tmp_path / scheme
    code = main(["export", f"{scheme}:{golden_dir / file}", "--out", str(out), "--num-heads", "4", *flags])
    assert code == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out)["parity"]["passed"] is True

    loaded = bundle.load(out, verify=True)
    manifest = loaded.manifest
    assert (manifest.family, manifest.sample_rate, manifest.window_samples) == (scheme, rate, window)
    assert manifest.padding.mode == padding and manifest.takes_num_samples and manifest.num_labels == 527
    assert loaded.labels == audioset_labels() and loaded.labels[137] == "Music"
    assert manifest.name == Path(file).stem
    assert manifest.notes["fused_operators"]["Attention"] == 2  # every layer's attention, fused

    arrays = ref.golden_arrays(golden_dir / file)
    waves = arrays["wave"]
    waveform = np.stack([ref.fit(w, window) for w in waves])
    num_samples = np.full(len(waves), min(waves.shape[1], window), dtype=np.int64)
    embedding, logits = run_bundle(out, waveform, num_samples)
    np.testing.assert_allclose(embedding, arrays["embedding"], rtol=0, atol=WAVE_IN_TOLERANCE)
    np.testing.assert_allclose(logits, arrays["logits"], rtol=0, atol=WAVE_IN_TOLERANCE)


def own_passt(path: Path, labels: list[str] | None):
    torch.save(ref.passt_state(seed=15, dim=48, depth=3, classes=10, stride=12, table_frames=300), path)
    return load_passt(str(path), window_seconds=2.5, num_heads=3, fstride=12, tstride=12, labels=labels)


def own_audiomae(path: Path, labels: list[str] | None):
    torch.save({"model": ref.audiomae_state(seed=16, dim=48, depth=3, classes=10, stride=10)}, path)
    return load_audiomae(str(path), window_seconds=4.0, num_heads=3, labels=labels)


def own_ssast(path: Path, labels: list[str] | None):
    torch.save(ref.ssast_state(seed=17, dim=48, depth=3, classes=10, stride=12), path)
    return load_ssast(str(path), window_seconds=3.0, num_heads=6, fstride=12, tstride=12, labels=labels)


@pytest.mark.parametrize("scheme, make", [("passt", own_passt), ("audiomae", own_audiomae), ("ssast", own_ssast)])
def test_own_configuration_exports_and_onnx_matches_torch(scheme, make, tmp_path, audio_dir):
    exportable = make(tmp_path / f"{scheme}-own.pt", labels=None)
    assert exportable.labels == [f"class_{i}" for i in range(10)]  # 10 classes: not AudioSet's
    assert exportable.name == f"{scheme}-own" and exportable.family == scheme
    rate, window = exportable.sample_rate, exportable.window_samples
    names = ("speech_greek_20s.ogg", "drum_snare.flac", "tabla.flac")
    clips = [ref.read_clip(audio_dir / name, rate) for name in names]
    built = export_bundle(exportable, tmp_path / "bundle", parity_audio=clips)
    assert built.manifest.parity["passed"]

    # A batch of another size than the parity run's, with a partial window.
    waveform = np.stack([ref.fit(clip, window) for clip in clips[:2]])
    num_samples = np.array([min(len(clip), window) for clip in clips[:2]], dtype=np.int64)
    assert num_samples[1] < window
    embedding, logits = run_bundle(built.path, waveform, num_samples)
    with torch.no_grad():
        inputs = (torch.from_numpy(waveform), torch.from_numpy(num_samples))
        expected_embedding, expected_logits = exportable.module(*inputs)
    assert logits.shape == (2, 10)
    np.testing.assert_allclose(logits, expected_logits.numpy(), rtol=0, atol=ONNX_TOLERANCE)
    np.testing.assert_allclose(embedding, expected_embedding.numpy(), rtol=0, atol=ONNX_TOLERANCE)


def test_sources_dispatch_and_labels_file(golden_dir, tmp_path):
    assert parse_source("audiomae:x.pth") == ("audiomae", "x.pth")
    labels_file = tmp_path / "labels.csv"
    labels_file.write_text("index,label\n" + "".join(f"{i},tag {i}\n" for i in range(527)))
    options = ExportOptions(name="mine", labels_file=labels_file, window_seconds=5.0, num_heads=4)
    model = load_torch_model("passt", str(golden_dir / "passt/passt-tiny-a.pt"), options)
    assert model.name == "mine" and model.labels[3] == "tag 3" and model.window_samples == 160000
    with pytest.raises(SourceError, match="strides are read from the file"):
        load_torch_model("audiomae", str(golden_dir / "audiomae/audiomae-tiny-a.pth"), ExportOptions(fstride=10))
    with pytest.raises(SourceError, match="--input-tdim is for ast"):
        load_torch_model("ssast", str(golden_dir / "ssast/ssast-tiny-a.pth"), ExportOptions(input_tdim=512))
