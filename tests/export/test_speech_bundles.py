"""Speech encoder bundles (`earshot export hf:<wav2vec2 | hubert | data2vec-audio | unispeech-sat | wavlm dir>`):
the exported graph, waveform in, against transformers on real clips (frames and the pooled embedding
of the same layer, within 1e-4), and frames=true through the service on the 75 s file.

Checkpoints: tiny random ones at non-default configurations (tests/models/test_speech_encoders.py).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from earshot import bundle
from earshot.cli import main
from earshot_export.parity import run_onnx
from tests.models.test_speech_encoders import BY_NAME, SAMPLE_RATE, feature_extractor, make_hf_dir
from tests.models.variant_references import read_clip
from tests.service.conftest import make_settings, serving
from tests.service.small_bundles import pooled

WINDOW_SECONDS = 2.0
WINDOW = int(WINDOW_SECONDS * SAMPLE_RATE)
LAYER = 2  # a middle layer of the tiny models' 3
FAMILIES = ("wav2vec2-group-postln", "hubert-layer-stable", "data2vec-audio", "unispeech-sat-layer-stable",
            "wavlm-group-postln")
CLIPS = ("speech_spanish_16s.ogg", "speech_greek_20s.ogg", "music_guitar.flac")
ATOL = 1e-4


def export(tmp_path, variant_name: str, *extra: str):
    variant = BY_NAME[variant_name]
    directory = tmp_path / variant_name
    model = make_hf_dir(directory, variant, seed=21)
    out = tmp_path / f"{variant_name}-bundle"
    argv = ["export", f"hf:{directory}", "--out", str(out), "--window-seconds", str(WINDOW_SECONDS), *extra]
    assert main(argv) == 0
    return model, variant, bundle.load(out, verify=True)


def reference(model, variant, waves: np.ndarray, layer: int) -> np.ndarray:
    """transformers' hidden states of `layer` (B, T, D), from its feature extractor (no attention mask)."""
    inputs = feature_extractor(variant.do_normalize)(list(waves), sampling_rate=SAMPLE_RATE, return_tensors="pt")
    with torch.no_grad():
        return model(inputs.input_values, output_hidden_states=True).hidden_states[layer].numpy()


@pytest.fixture(scope="module")
def windows(audio_dir) -> np.ndarray:
    """Full 2 s windows of real clips (from 1 s in)."""
    return np.stack([read_clip(audio_dir / name, SAMPLE_RATE)[SAMPLE_RATE : SAMPLE_RATE + WINDOW] for name in CLIPS])


@pytest.mark.parametrize("variant_name", FAMILIES)
def test_the_bundle_matches_transformers(tmp_path, windows, variant_name):
    model, variant, built = export(tmp_path, variant_name, "--layer", str(LAYER))
    manifest = built.manifest
    assert manifest.has_frames and manifest.frame_grid is not None and manifest.parity["passed"]
    assert (manifest.window_samples, manifest.hop_samples) == (WINDOW, 799 * 40)  # hop: the window's whole frames
    assert manifest.frame_grid.hop_samples == 40 and manifest.frame_grid.receptive_samples == 70  # the tiny convs
    assert manifest.notes["embedding"] == "mean over frames of layer 2 of 3"
    got = run_onnx(built.model_path, windows, np.full(len(windows), WINDOW, dtype=np.int64))
    expected = reference(model, variant, windows, LAYER)  # (B, T, D)
    assert got["frames"].shape == expected.shape == (len(windows), manifest.frame_grid.count, manifest.embedding_dim)
    np.testing.assert_allclose(got["frames"], expected, rtol=0, atol=ATOL)
    np.testing.assert_allclose(got["embedding"], expected.mean(axis=1), rtol=0, atol=ATOL)


def test_mean_over_layers_and_a_short_last_window(tmp_path, windows):
    """--layer mean; and a window that ends early is transformers on the zero-padded batch (no
    attention mask): normalised over the real samples, the embedding pooling the real frames."""
    model, variant, built = export(tmp_path, "hubert-group-no-projection-norm", "--layer", "mean")
    short = 20_000  # 1.25 s of a 2 s window
    padded = windows.copy()
    padded[1:, short:] = 0.0  # the engine zero-pads a window past the clip's end
    got = run_onnx(built.model_path, padded, np.array([WINDOW, short, short], dtype=np.int64))
    from transformers import Wav2Vec2FeatureExtractor

    # the extractor normalising each clip over its own samples and padding with zeros (with
    # return_attention_mask=False it would normalise the padding too, batch by batch)
    extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SAMPLE_RATE, padding_value=0.0,
                                         do_normalize=True, return_attention_mask=True)
    inputs = extractor([windows[0], windows[1, :short], windows[2, :short]], sampling_rate=SAMPLE_RATE,
                       padding="max_length", max_length=WINDOW, return_tensors="pt")
    with torch.no_grad():
        hidden = model(inputs.input_values, output_hidden_states=True).hidden_states
    expected = torch.stack(hidden[1:]).mean(dim=0).numpy()  # (B, T, D): the mean over layers 1..L
    np.testing.assert_allclose(got["frames"], expected, rtol=0, atol=ATOL)
    real = int(np.ceil(short / built.manifest.frame_grid.hop_samples))
    np.testing.assert_allclose(got["embedding"][1], expected[1, :real].mean(axis=0), rtol=0, atol=ATOL)
    np.testing.assert_allclose(got["embedding"][0], expected[0].mean(axis=0), rtol=0, atol=ATOL)


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_reduced_precision_bundles(tmp_path, windows, precision):
    model, variant, built = export(tmp_path, "wavlm-group-postln", "--precision", precision)
    assert built.manifest.precision == precision and built.manifest.parity["passed"]
    got = run_onnx(built.model_path, windows, np.full(len(windows), WINDOW, dtype=np.int64))
    expected = reference(model, variant, windows, 3)
    cosine = (got["embedding"] * expected.mean(axis=1)).sum(1) / (
        np.linalg.norm(got["embedding"], axis=1) * np.linalg.norm(expected.mean(axis=1), axis=1)
    )
    assert cosine.min() >= 0.99


@pytest.mark.anyio
async def test_frames_over_http_on_the_75_s_file(tmp_path, audio_dir):
    model, variant, built = export(tmp_path, "wav2vec2-layer-stable")
    data = (audio_dir / "long_75s_stereo_22k.flac").read_bytes()
    async with serving(make_settings(tmp_path), [built.path]) as client:
        response = await client.post(
            f"/v1/embed?model={built.name}&frames=true&windows=true", content=data, headers={"content-type": "audio/flac"}
        )
    assert response.status_code == 200, response.text
    body = response.json()
    starts = np.array([f["start_s"] for f in body["frames"]])
    ends = np.array([f["end_s"] for f in body["frames"]])
    assert starts[0] == 0.0 and (np.diff(starts) > 0).all() and np.allclose(starts[1:], ends[:-1])
    assert ends[-1] == pytest.approx(body["duration_s"]) and body["duration_s"] > 74
    frames = np.array([f["embedding"] for f in body["frames"]])
    cell = built.manifest.frame_grid.hop_samples / SAMPLE_RATE
    hop_s = built.manifest.hop_samples / SAMPLE_RATE
    for window in body["windows"]:  # pooled and frame outputs agree
        inside = (starts >= window["start_s"] - 1e-9) & (starts < window["start_s"] + hop_s - 1e-9)
        np.testing.assert_allclose(window["embedding"], frames[inside].mean(axis=0), rtol=0, atol=1e-4)
    manifest = built.manifest
    clip = pooled(np.array([w["embedding"] for w in body["windows"]]), round(body["duration_s"] * SAMPLE_RATE),
                  manifest.window_samples, manifest.hop_samples)
    np.testing.assert_allclose(body["embedding"], clip, atol=1e-5)
    assert round(hop_s / cell) == built.manifest.frame_grid.count  # windows advance by their whole frames
