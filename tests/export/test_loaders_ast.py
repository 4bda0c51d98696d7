"""load_hf / load_ast_pth: the ExportableModel the exporter gets for AST checkpoints."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from earshot import bundle
from earshot.cli import main
from earshot_export.loaders.ast import load_ast_pth, load_hf  # noqa: E402
from earshot_models.checkpoints import CheckpointError  # noqa: E402
from tests.models.ast_fixtures import (  # noqa: E402
    CLIPS,
    NON_DEFAULT,
    TINY,
    original_ast_state_dict,
    randomise_unit_scale,
    read_clip,
    window_batch,
)
from tests.models.test_ast_encoder import reference_outputs  # noqa: E402
from tests.service.conftest import make_settings, serving  # noqa: E402


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    from transformers import ASTConfig, ASTForAudioClassification

    id2label = {0: "Speech", 1: "Music", 2: "Bird"}
    config = ASTConfig(**TINY, **NON_DEFAULT, id2label=id2label, label2id={v: k for k, v in id2label.items()})
    model = ASTForAudioClassification(config)
    randomise_unit_scale(model, seed=11)
    directory = tmp_path_factory.mktemp("hf") / "ast-tiny"
    model.save_pretrained(directory)
    model.config._attn_implementation = "eager"
    return directory, model.eval()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_load_hf_describes_the_checkpoint(hf_dir, audio_dir):
    directory, reference = hf_dir
    exportable = load_hf(str(directory), name=None)
    assert exportable.name == "ast-tiny"
    assert exportable.family == "ast"
    assert exportable.sample_rate == 16000
    assert exportable.window_samples == 299 * 160 + 400  # exactly 300 frames
    assert exportable.hop_samples == 300 * 160
    assert exportable.embedding_dim == 64
    assert exportable.labels == ["Speech", "Music", "Bird"]
    assert exportable.padding.mode == "frames"
    assert exportable.tag_activation == "sigmoid"
    assert exportable.source == {
        "uri": str(directory.resolve()),
        "sha256": sha256(directory / "model.safetensors"),
        "format": "hf-transformers-ast",
    }
    assert load_hf(str(directory), name="mine").name == "mine"

    # The module takes the graph contract's inputs and reproduces transformers on its own features.
    waves = [read_clip(audio_dir / name) for name in CLIPS[:2]]
    waveform, num_samples = window_batch(waves, exportable.window_samples)
    module = exportable.module
    with torch.no_grad():
        embedding, logits = module(waveform, num_samples)
        expected = reference(module.frontend(waveform, num_samples)).logits
    assert embedding.shape == (2, 64) and logits.shape == (2, 3)
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-4)


def test_load_ast_pth(hf_dir, tmp_path):
    _, reference = hf_dir
    path = tmp_path / "audioset_10_10_tiny.pth"
    torch.save(original_ast_state_dict(reference), path)
    geometry = dict(fstride=12, tstride=8, input_fdim=64, input_tdim=300, num_heads=4)
    exportable = load_ast_pth(str(path), name=None, **geometry)
    assert exportable.name == "audioset_10_10_tiny"
    assert exportable.labels == ["class_0", "class_1", "class_2"]
    assert exportable.source == {"uri": str(path.resolve()), "sha256": sha256(path), "format": "ast-pth"}
    assert exportable.window_samples == 299 * 160 + 400 and exportable.embedding_dim == 64
    labels = ["a", "b", "c"]
    assert load_ast_pth(str(path), name="x", labels=labels, **geometry).labels == labels
    with pytest.raises(CheckpointError, match="pass the strides and frame count"):
        load_ast_pth(str(path), name="x")  # AST's defaults (10, 10, 128 x 1024) do not fit this file


@pytest.mark.anyio
async def test_a_clip_just_past_one_window_pools_to_what_the_transformers_pipeline_gives(hf_dir, tmp_path, audio_dir):
    """transformers' AST pipeline cuts a clip at max_length frames. The service runs a second window
    for a clip 30 ms longer, mostly zeros; by the pooling rule it weighs 1% of the first, so the clip
    embedding stays the pipeline's, where a plain mean of the two windows would not."""
    from transformers import ASTFeatureExtractor

    directory, reference = hf_dir
    assert main(["export", f"hf:{directory}", "--out", str(tmp_path / "bundle")]) == 0
    built = bundle.load(tmp_path / "bundle", verify=True)
    manifest = built.manifest
    clip = read_clip(audio_dir / CLIPS[0])[: manifest.window_samples + 480]  # 30 ms past the first window
    extractor = ASTFeatureExtractor(num_mel_bins=reference.config.num_mel_bins, max_length=reference.config.max_length)
    features = extractor([clip], sampling_rate=16000, return_tensors="pt")["input_values"]  # cut at 300 frames
    expected = reference_outputs(reference, features)[0][0].numpy()  # (64,)

    wav = io.BytesIO()
    soundfile.write(wav, clip, 16000, format="WAV", subtype="FLOAT")
    async with serving(make_settings(tmp_path), [built.path]) as client:
        response = await client.post(f"/v1/embed?model={built.name}&windows=true", content=wav.getvalue(),
                                     headers={"content-type": "audio/wav"})
    assert response.status_code == 200, response.text
    body = response.json()
    first, last = (np.array(w["embedding"]) for w in body["windows"])
    np.testing.assert_allclose(first, expected, rtol=0, atol=1e-4)  # the window is the pipeline's input

    def cosine(a: np.ndarray, b: np.ndarray) -> float:
        return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))

    assert cosine(np.array(body["embedding"]), expected) >= 0.9999
    np.testing.assert_allclose(body["embedding"], (first + 0.01 * last) / 1.01, rtol=0, atol=1e-5)
    assert cosine((first + last) / 2, expected) < 0.999  # a plain mean would be far from the pipeline
