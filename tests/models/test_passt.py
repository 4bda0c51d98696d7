"""PaSST: our frontend and encoder (AST's, switched by the config) against ../shared/golden/passt
and, on a configuration of our own, against the README's recipe written out (variant_references)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from earshot_models.checkpoints import CheckpointError
from earshot_models.checkpoints.passt import read_passt
from tests.models import variant_references as ref

FRONTEND_TOLERANCE = 1e-3
MODEL_TOLERANCE = 1e-4  # given the same frontend output
SAMPLE_RATE = 32000


@pytest.fixture(scope="module")
def golden(golden_dir):
    path = golden_dir / "passt" / "passt-tiny-a.pt"
    return path, ref.golden_arrays(path)


def test_frontend_matches_golden(golden):
    path, arrays = golden
    model = read_passt(path, window_seconds=5, num_heads=4).build()
    waveform = torch.from_numpy(arrays["wave"])  # (3, 160000): 5 s at 32 kHz
    with torch.no_grad():
        mel = model.frontend(waveform, torch.full((3,), waveform.shape[1]))  # (B, T, M)
    assert mel.shape == (3, 500, 128)
    np.testing.assert_allclose(mel.transpose(1, 2).numpy(), arrays["mel"], rtol=0, atol=FRONTEND_TOLERANCE)


def test_encoder_given_golden_frontend(golden):
    path, arrays = golden
    checkpoint = read_passt(path, window_seconds=5, num_heads=4)
    assert checkpoint.encoder.grid == (12, 49) and checkpoint.encoder.time_table_patches == 99
    with torch.no_grad():
        embedding, logits = checkpoint.build().encoder(torch.from_numpy(arrays["mel"]).transpose(1, 2))
    np.testing.assert_allclose(embedding.numpy(), arrays["embedding"], rtol=0, atol=MODEL_TOLERANCE)
    np.testing.assert_allclose(logits.numpy(), arrays["logits"], rtol=0, atol=MODEL_TOLERANCE)


def test_own_configuration_matches_recipe(tmp_path, audio_dir):
    """Stride 12, 3 layers of 48 with 3 heads, 10 classes, a table for 300 frames cut to a 2.5 s
    window (250 frames, 20 of 24 time columns); a clip shorter than the window is zero-padded."""
    state = ref.passt_state(seed=5, dim=48, depth=3, classes=10, stride=12, table_frames=300)
    path = tmp_path / "passt-s12.pt"
    torch.save(state, path)
    checkpoint = read_passt(path, window_seconds=2.5, num_heads=3, fstride=12, tstride=12)
    assert checkpoint.encoder.grid == (10, 20) and checkpoint.encoder.time_table_patches == 24
    assert checkpoint.labels == [f"class_{i}" for i in range(10)]
    model = checkpoint.build()
    window = model.frontend.window_samples
    names = ("music_guitar.flac", "short_50ms.wav")
    waves = [ref.fit(ref.read_clip(audio_dir / name, SAMPLE_RATE), window) for name in names]
    waveform = torch.from_numpy(np.stack(waves))
    with torch.no_grad():
        mel = model.frontend(waveform, torch.full((2,), window))
        embedding, logits = model(waveform, torch.full((2,), window))
        expected_mel = torch.from_numpy(np.stack([ref.passt_mel(w) for w in waves])).float()
        expected_embedding, expected_logits = ref.passt_forward(state, expected_mel, heads=3, stride=12)
    np.testing.assert_allclose(mel.numpy(), expected_mel.numpy(), rtol=0, atol=FRONTEND_TOLERANCE)
    assert expected_logits.abs().max() > 0.5
    np.testing.assert_allclose(logits.numpy(), expected_logits.numpy(), rtol=0, atol=1e-3)
    np.testing.assert_allclose(embedding.numpy(), expected_embedding.numpy(), rtol=0, atol=1e-3)
    with torch.no_grad():  # and given the same frontend output, within the model tolerance
        embedding, logits = model.encoder(expected_mel)
    np.testing.assert_allclose(logits.numpy(), expected_logits.numpy(), rtol=0, atol=MODEL_TOLERANCE)


def test_samples_past_num_samples_are_zeros(golden):
    path, arrays = golden
    model = read_passt(path, window_seconds=5, num_heads=4).build()
    clean = torch.from_numpy(arrays["wave"][:1].copy())
    clean[:, 100000:] = 0.0
    dirty = clean.clone()
    dirty[:, 100000:] = 0.5
    with torch.no_grad():
        expected = model(clean, torch.tensor([160000]))[1]
        got = model(dirty, torch.tensor([100000]))[1]
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_bad_checkpoints_are_refused_clearly(golden, tmp_path):
    path, _ = golden
    with pytest.raises(CheckpointError, match="time position table holds 99"):
        read_passt(path, window_seconds=10.5, num_heads=4)  # 1051 frames, 104 time patches
    with pytest.raises(CheckpointError, match="12 frequency positions.*fstride=12"):
        read_passt(path, window_seconds=5, num_heads=4, fstride=12)
    with pytest.raises(CheckpointError, match="not divisible"):
        read_passt(path, window_seconds=5, num_heads=7)
    state = torch.load(path, weights_only=True)
    cases = {
        "missing": (
            {k: v for k, v in state.items() if k != "blocks.1.attn.proj.bias"},
            "missing key 'blocks.1.attn.proj.bias'",
        ),
        "shape": ({**state, "norm.weight": torch.ones(95)}, r"key 'norm.weight' has shape \[95\]"),
        "unexpected": ({**state, "pos_embed": torch.zeros(1, 3, 96)}, "unexpected key 'pos_embed'"),
        "not passt": (
            {k: v for k, v in state.items() if k != "freq_new_pos_embed"},
            "missing key 'freq_new_pos_embed'",
        ),
    }
    for label, (bad, message) in cases.items():
        bad_path = tmp_path / f"{label.replace(' ', '-')}.pt"
        torch.save(bad, bad_path)
        with pytest.raises(CheckpointError, match=message):
            read_passt(bad_path, window_seconds=5, num_heads=4)
