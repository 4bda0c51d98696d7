"""Audio-MAE: our Kaldi frontend and encoder (AST's, switched to time-major patches, cls only, no
final norm, fc_norm, plain head) against ../shared/golden/audiomae and, on a configuration of our
own, against the README's recipe written out (variant_references)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from earshot_models.checkpoints import CheckpointError
from earshot_models.checkpoints.audiomae import read_audiomae
from tests.models import variant_references as ref

FRONTEND_TOLERANCE = 1e-3
MODEL_TOLERANCE = 1e-4  # given the same frontend output
GOLDEN_SAMPLES = 96000  # 6 s at 16 kHz


@pytest.fixture(scope="module")
def golden(golden_dir):
    path = golden_dir / "audiomae" / "audiomae-tiny-a.pth"
    return path, ref.golden_arrays(path)


@pytest.mark.parametrize("window_seconds", [10.0, 6.0], ids=["default-10s-window", "6s-window"])
def test_frontend_matches_golden(golden, window_seconds):
    """The 6 s clip in the default 10 s window (598 real frames, the rest padded to 1024), or in a
    6 s window (598 frames computed, padded to 1024 in the graph)."""
    path, arrays = golden
    frontend = read_audiomae(path, window_seconds=window_seconds, num_heads=4).build().frontend
    assert frontend.window_samples == {10.0: 997 * 160 + 400, 6.0: 597 * 160 + 400}[window_seconds]
    waveform = torch.from_numpy(np.stack([ref.fit(w, frontend.window_samples) for w in arrays["wave"]]))
    real = torch.full((3,), min(GOLDEN_SAMPLES, frontend.window_samples))
    with torch.no_grad():
        fbank = frontend(waveform, real)
    np.testing.assert_allclose(fbank.numpy(), arrays["fbank"], rtol=0, atol=FRONTEND_TOLERANCE)


def test_encoder_given_golden_frontend(golden):
    path, arrays = golden
    checkpoint = read_audiomae(path, num_heads=4)
    assert checkpoint.encoder.patch_order == "time_major" and checkpoint.encoder.grid == (8, 64)
    with torch.no_grad():
        embedding, logits = checkpoint.build().encoder(torch.from_numpy(arrays["fbank"]))
    np.testing.assert_allclose(embedding.numpy(), arrays["embedding"], rtol=0, atol=MODEL_TOLERANCE)
    np.testing.assert_allclose(logits.numpy(), arrays["logits"], rtol=0, atol=MODEL_TOLERANCE)


def test_own_configuration_matches_recipe(tmp_path, audio_dir):
    """Overlapping patches (the reference's use_custom_patch: stride 10, 101 x 12, read from the
    position table), 3 layers of 48 with 3 heads, 10 classes, a 4 s window."""
    state = ref.audiomae_state(seed=6, dim=48, depth=3, classes=10, stride=10)
    path = tmp_path / "audiomae-custom-patch.pth"
    torch.save({"model": state}, path)
    checkpoint = read_audiomae(path, window_seconds=4.0, num_heads=3)
    assert (checkpoint.encoder.fstride, checkpoint.encoder.tstride, checkpoint.encoder.grid) == (10, 10, (12, 101))
    model = checkpoint.build()
    window = model.frontend.window_samples
    clips = [ref.read_clip(audio_dir / name, 16000) for name in ("choir.flac", "drum_kick.flac")]
    waves = [ref.fit(clip, window) for clip in clips]
    real = torch.tensor([min(len(clip), window) for clip in clips])  # the kick is shorter than the window
    with torch.no_grad():
        fbank = model.frontend(torch.from_numpy(np.stack(waves)), real)
        embedding, logits = model(torch.from_numpy(np.stack(waves)), real)
    expected_fbank = torch.from_numpy(np.stack([ref.ast_dataloader_fbank(c[:window]) for c in clips])).float()
    expected_embedding, expected_logits = ref.audiomae_forward(state, expected_fbank, heads=3, stride=10)
    np.testing.assert_allclose(fbank.numpy(), expected_fbank.numpy(), rtol=0, atol=FRONTEND_TOLERANCE)
    assert expected_logits.abs().max() > 0.5
    np.testing.assert_allclose(logits.numpy(), expected_logits.numpy(), rtol=0, atol=1e-3)
    np.testing.assert_allclose(embedding.numpy(), expected_embedding.numpy(), rtol=0, atol=1e-3)
    with torch.no_grad():
        _, logits = model.encoder(expected_fbank)
    np.testing.assert_allclose(logits.numpy(), expected_logits.numpy(), rtol=0, atol=MODEL_TOLERANCE)


def test_bad_checkpoints_are_refused_clearly(golden, tmp_path):
    path, _ = golden
    with pytest.raises(CheckpointError, match="position table holds 1024"):
        read_audiomae(path, window_seconds=11.0, num_heads=4)
    state = torch.load(path, weights_only=True)["model"]
    cases = {
        "pretraining": ({**state, "mask_token": torch.zeros(1, 1, 96)}, "pre-training checkpoint"),
        "grid": ({**state, "pos_embed": torch.zeros(1, 400, 96)}, "400 positions, which fits no patch grid"),
        "final-norm": ({**state, "norm.weight": torch.ones(96)}, "unexpected key 'norm.weight'"),
        "no-fc-norm": ({k: v for k, v in state.items() if not k.startswith("fc_norm")}, "missing key 'fc_norm.weight'"),
        "shape": ({**state, "blocks.0.mlp.fc2.weight": torch.ones(96, 383)}, "'blocks.0.mlp.fc2.weight' has shape"),
    }
    for label, (bad, message) in cases.items():
        bad_path = tmp_path / f"{label}.pth"
        torch.save({"model": bad}, bad_path)
        with pytest.raises(CheckpointError, match=message):
            read_audiomae(bad_path, num_heads=4)
