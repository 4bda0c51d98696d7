"""`earshot export hf:<clap dir> --labels ... --prompt ...`: CLAP bundles against transformers' ClapModel,
and a zero-shot bundle served by the real service."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from earshot import bundle  # noqa: E402
from earshot.cli import main  # noqa: E402
from earshot_export.loaders.clap import load_clap  # noqa: E402
from earshot_export.onnx_export import export_bundle  # noqa: E402
from earshot_export.parity import cosine_rows, run_onnx  # noqa: E402
from earshot_export.sources import hf_model_type  # noqa: E402
from tests.models.clap_fixtures import UNFUSED_EXTRACTOR, make_clap_dir, read_clip  # noqa: E402

LABELS = ["speech", "music", "bird"]
PROMPT = "the sound of {}"
CLIPS = ("speech_french.ogg", "music_piano.flac", "bird_crow.ogg", "short_50ms.wav")


@pytest.fixture(scope="module")
def clap_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("clap") / "clap-tiny"
    return directory, make_clap_dir(directory, seed=3)


@pytest.fixture(scope="module")
def clips(audio_dir) -> list[np.ndarray]:
    return [read_clip(audio_dir / name) for name in CLIPS]


@pytest.fixture(scope="module")
def reference(clap_dir, clips):
    """transformers' ClapModel on ClapFeatureExtractor's features: (audio embeddings, logits_per_audio)."""
    from transformers import AutoTokenizer, ClapFeatureExtractor

    directory, model = clap_dir
    features = ClapFeatureExtractor(**UNFUSED_EXTRACTOR)(clips, sampling_rate=48000, return_tensors="pt")
    tokens = AutoTokenizer.from_pretrained(directory)([PROMPT.format(label) for label in LABELS], padding=True,
                                                      return_tensors="pt")
    with torch.no_grad():
        output = model(input_features=features["input_features"].float(), **tokens)
    return output.audio_embeds.numpy(), output.logits_per_audio.numpy()


@pytest.fixture(scope="module")
def exported(clap_dir, tmp_path_factory, audio_dir):
    directory, _ = clap_dir
    root = tmp_path_factory.mktemp("clap-bundles")
    labels_file = root / "labels.txt"
    labels_file.write_text("\n".join(LABELS) + "\n", encoding="utf-8")
    out = root / "clap-zero-shot"
    argv = ["export", f"hf:{directory}", "--out", str(out), "--labels", str(labels_file), "--prompt", PROMPT]
    assert main(argv) == 0
    return bundle.load(out, verify=True)


def window_batch(clips: list[np.ndarray], window_samples: int) -> tuple[np.ndarray, np.ndarray]:
    batch = np.zeros((len(clips), window_samples), dtype=np.float32)
    counts = np.zeros(len(clips), dtype=np.int64)
    for row, clip in enumerate(clips):
        counts[row] = min(len(clip), window_samples)
        batch[row, : counts[row]] = clip[: counts[row]]
    return batch, counts


def test_hf_sources_dispatch_on_model_type(clap_dir, tmp_path):
    directory, _ = clap_dir
    assert hf_model_type(str(directory)) == "clap"
    assert hf_model_type(str(tmp_path / "absent")) is None


@pytest.mark.slow
def test_exported_bundle_matches_clap_model(exported, clips, reference):
    manifest = exported.manifest
    assert manifest.family == "clap" and manifest.tag_activation == "softmax" and manifest.parity["passed"]
    assert (manifest.sample_rate, manifest.window_samples, manifest.hop_samples) == (48000, 480000, 480000)
    assert manifest.embedding_dim == 24 and exported.labels == LABELS
    assert manifest.notes["prompts"] == [PROMPT.format(label) for label in LABELS]
    assert manifest.notes["tag_kind"] == "zero-shot"
    waveform, num_samples = window_batch(clips, manifest.window_samples)
    got = run_onnx(exported.path / manifest.model_file, waveform, num_samples)
    embeddings, logits = reference
    assert cosine_rows(got["embedding"], embeddings).min() >= 0.9999
    np.testing.assert_allclose(np.linalg.norm(got["embedding"], axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(got["logits"], logits, rtol=0, atol=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_reduced_precision_bundles(clap_dir, clips, reference, tmp_path, precision):
    directory, _ = clap_dir
    model = load_clap(str(directory))  # embedding only
    assert model.num_labels == 0 and model.notes["tag_kind"] == "none"
    built = export_bundle(model, tmp_path / precision, precision, parity_audio=clips)
    assert built.manifest.parity["passed"] and not built.manifest.has_logits
    waveform, num_samples = window_batch(clips, model.window_samples)
    got = run_onnx(built.path / built.manifest.model_file, waveform, num_samples)
    assert cosine_rows(got["embedding"], reference[0]).min() >= 0.99


@contextlib.asynccontextmanager
async def serving(tmp_path: Path, bundle_dir: Path):
    from earshot.api.app import create_app
    from earshot.settings import Settings

    app = create_app(Settings(cache_dir=tmp_path / "cache", threads=1, max_wait_ms=2.0), [bundle_dir])
    async with app.router.lifespan_context(app):
        lifecycle = app.state.lifecycle
        while not lifecycle.ready:
            assert lifecycle.failure is None, lifecycle.failure
            await asyncio.sleep(0.005)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://earshot", timeout=60) as client:
            yield client


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_the_service_serves_zero_shot_tags(exported, audio_dir, tmp_path, clips):
    path = audio_dir / "music_piano.flac"
    async with serving(tmp_path, exported.path) as client:
        response = await client.post(
            f"/v1/embed?model={exported.manifest.name}&top_k=3", content=path.read_bytes(),
            headers={"content-type": "audio/flac"},
        )
        models = await client.get("/v1/models")
    assert response.status_code == 200, response.text
    body = response.json()
    tags = body["tags"]
    assert sorted(tag["label"] for tag in tags) == sorted(LABELS)
    assert sum(tag["score"] for tag in tags) == pytest.approx(1.0, abs=1e-5)  # softmax over the label set
    waveform, num_samples = window_batch([clips[CLIPS.index("music_piano.flac")]], exported.manifest.window_samples)
    expected = run_onnx(exported.path / exported.manifest.model_file, waveform, num_samples)
    np.testing.assert_allclose(body["embedding"], expected["embedding"][0], rtol=1e-4, atol=1e-5)
    scores = np.exp(expected["logits"][0] - expected["logits"][0].max())
    scores /= scores.sum()
    assert tags[0]["label"] == LABELS[int(scores.argmax())]
    assert models.status_code == 200 and exported.manifest.name in [m["id"] for m in models.json()["data"]]
