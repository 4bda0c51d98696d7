"""SSAST (ft_avgtok): our Kaldi frontend and encoder (AST's, pooling the mean of the patch tokens)
against ../shared/golden/ssast and, on a configuration of our own, against the README's recipe
written out (variant_references)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from earshot_models.checkpoints import CheckpointError
from earshot_models.checkpoints.ssast import read_ssast
from tests.models import variant_references as ref

FRONTEND_TOLERANCE = 1e-3
MODEL_TOLERANCE = 1e-4  # given the same frontend output
GOLDEN_SAMPLES = 96000  # 6 s at 16 kHz


@pytest.fixture(scope="module")
def golden(golden_dir):
    path = golden_dir / "ssast" / "ssast-tiny-a.pth"
    return path, ref.golden_arrays(path)


def test_frontend_matches_golden(golden):
    path, arrays = golden
    frontend = read_ssast(path, num_heads=4).build().frontend
    waveform = torch.from_numpy(np.stack([ref.fit(w, frontend.window_samples) for w in arrays["wave"]]))
    with torch.no_grad():
        fbank = frontend(waveform, torch.full((3,), GOLDEN_SAMPLES))
    np.testing.assert_allclose(fbank.numpy(), arrays["fbank"], rtol=0, atol=FRONTEND_TOLERANCE)


def test_encoder_given_golden_frontend(golden):
    path, arrays = golden
    checkpoint = read_ssast(path, num_heads=4)
    assert checkpoint.encoder.pooling == "mean_patch" and checkpoint.encoder.grid == (12, 101)
    with torch.no_grad():
        embedding, logits = checkpoint.build().encoder(torch.from_numpy(arrays["fbank"]))
    np.testing.assert_allclose(embedding.numpy(), arrays["embedding"], rtol=0, atol=MODEL_TOLERANCE)
    np.testing.assert_allclose(logits.numpy(), arrays["logits"], rtol=0, atol=MODEL_TOLERANCE)


def test_own_configuration_matches_recipe(tmp_path, audio_dir):
    """Strides 12 x 12 (10 x 85 patches), 3 layers of 48 with 6 heads, 10 classes, a 3 s window."""
    state = ref.ssast_state(seed=7, dim=48, depth=3, classes=10, stride=12)
    path = tmp_path / "ssast-s12.pth"
    torch.save(state, path)
    checkpoint = read_ssast(path, window_seconds=3.0, num_heads=6, fstride=12, tstride=12, labels=list("abcdefghij"))
    assert checkpoint.encoder.grid == (10, 85) and checkpoint.labels == list("abcdefghij")
    model = checkpoint.build()
    window = model.frontend.window_samples
    clips = [ref.read_clip(audio_dir / name, 16000) for name in ("tabla.flac", "bird_crow.ogg")]
    waves = torch.from_numpy(np.stack([ref.fit(clip, window) for clip in clips]))
    real = torch.tensor([min(len(clip), window) for clip in clips])
    with torch.no_grad():
        embedding, logits = model(waves, real)
    expected_fbank = torch.from_numpy(np.stack([ref.ast_dataloader_fbank(c[:window]) for c in clips])).float()
    expected_embedding, expected_logits = ref.ssast_forward(state, expected_fbank, heads=6, stride=12)
    assert expected_logits.abs().max() > 0.5
    np.testing.assert_allclose(logits.numpy(), expected_logits.numpy(), rtol=0, atol=1e-3)
    np.testing.assert_allclose(embedding.numpy(), expected_embedding.numpy(), rtol=0, atol=1e-3)
    with torch.no_grad():
        _, logits = model.encoder(expected_fbank)
    np.testing.assert_allclose(logits.numpy(), expected_logits.numpy(), rtol=0, atol=MODEL_TOLERANCE)


def test_bad_checkpoints_are_refused_clearly(golden, tmp_path):
    path, _ = golden
    with pytest.raises(CheckpointError, match="pass the strides"):
        read_ssast(path, num_heads=4, fstride=12, tstride=12)
    with pytest.raises(CheckpointError, match="not divisible"):
        read_ssast(path)  # 64 wide: the released models' 12 heads do not divide it
    state = torch.load(path, weights_only=True)
    cases = {
        "pretraining": ({**state, "module.mask_embed": torch.zeros(1, 1, 64)}, "pre-training checkpoint"),
        "no-head": ({k: v for k, v in state.items() if "mlp_head" not in k}, "missing key 'mlp_head.1.weight'"),
        "shape": ({**state, "module.v.dist_token": torch.zeros(1, 2, 64)}, r"'v.dist_token' has shape \[1, 2, 64\]"),
    }
    for label, (bad, message) in cases.items():
        bad_path = tmp_path / f"{label}.pth"
        torch.save(bad, bad_path)
        with pytest.raises(CheckpointError, match=message):
            read_ssast(bad_path, num_heads=4)
