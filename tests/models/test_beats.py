"""BEATs against the golden vectors of the reference (../shared/golden/beats), and its padding mask."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from earshot_models.beats import BeatsEncoder, BeatsWaveformModel, beats_fbank
from earshot_models.beats.rel_pos import relative_position_buckets
from earshot_models.checkpoints.beats import read_beats_checkpoint
from earshot_models.frontend.kaldi_fbank import KaldiFbank
from tests.models.beats_fixtures import GOLDEN_FRAMES, GOLDEN_PATCH_FRAMES, GOLDEN_SAMPLES, golden_paths, load_golden

FBANK_ATOL = 1e-3  # the golden README's tolerances
MODEL_ATOL = 1e-4
END_TO_END_ATOL = 2e-3
GOLDEN_SECONDS = GOLDEN_SAMPLES / 16000


@pytest.fixture(scope="module")
def golden(golden_dir):
    return load_golden(golden_dir)


@pytest.fixture(scope="module")
def models(golden_dir):
    paths = golden_paths(golden_dir)
    return {kind: read_beats_checkpoint(paths[kind], GOLDEN_SECONDS).build() for kind in ("pretrained", "finetuned")}


def full(batch: int, samples: int) -> torch.Tensor:
    return torch.full((batch,), samples, dtype=torch.int64)


def test_frontend_matches_golden_fbank(golden):
    frontend = KaldiFbank(beats_fbank(GOLDEN_FRAMES))
    with torch.no_grad():
        fbank = frontend(torch.from_numpy(golden["wave"]), full(3, GOLDEN_SAMPLES)).numpy()
    assert fbank.shape == golden["fbank"].shape
    np.testing.assert_allclose(fbank, golden["fbank"], rtol=0, atol=FBANK_ATOL)


def test_window_is_cut_to_whole_patches(models):
    model = models["pretrained"]
    assert model.frontend.config.num_frames == GOLDEN_PATCH_FRAMES
    assert model.frontend.config.window_samples == (GOLDEN_PATCH_FRAMES - 1) * 160 + 400
    assert model.encoder.config.num_tokens == 296


def test_pretrained_tokens_given_golden_fbank(golden, models):
    fbank = torch.from_numpy(golden["fbank"][:, :GOLDEN_PATCH_FRAMES])
    with torch.no_grad():
        tokens = models["pretrained"].encoder.forward_features(fbank).numpy()
        embedding, logits = models["pretrained"].encoder(fbank)
    np.testing.assert_allclose(tokens, golden["pretrained_output"], rtol=0, atol=MODEL_ATOL)
    assert logits is None
    np.testing.assert_allclose(embedding.numpy(), golden["pretrained_output"].mean(axis=1), rtol=0, atol=MODEL_ATOL)


def test_finetuned_tags_given_golden_fbank(golden, models):
    fbank = torch.from_numpy(golden["fbank"][:, :GOLDEN_PATCH_FRAMES])
    with torch.no_grad():
        _, logits = models["finetuned"].encoder(fbank)
    np.testing.assert_allclose(torch.sigmoid(logits).numpy(), golden["finetuned_output"], rtol=0, atol=MODEL_ATOL)


def test_end_to_end_from_the_waveform(golden, models):
    wave = torch.from_numpy(golden["wave"])
    with torch.no_grad():
        pretrained = models["pretrained"]
        tokens = pretrained.encoder.forward_features(pretrained.frontend(wave, full(3, GOLDEN_SAMPLES)))
        _, logits = models["finetuned"](wave, full(3, GOLDEN_SAMPLES))
    np.testing.assert_allclose(tokens.numpy(), golden["pretrained_output"], rtol=0, atol=END_TO_END_ATOL)
    np.testing.assert_allclose(torch.sigmoid(logits).numpy(), golden["finetuned_output"], rtol=0, atol=END_TO_END_ATOL)


def test_a_padded_window_gives_what_the_clip_alone_gives(golden_dir, golden):
    """num_samples < window: the real tokens, and so the embedding and logits, are those of BEATs run
    on the clip alone (a model whose window is exactly the clip's whole patches)."""
    checkpoint = read_beats_checkpoint(golden_paths(golden_dir)["finetuned"], GOLDEN_SECONDS)
    long_model = checkpoint.build()
    clip_frames = 13 * 16  # 2.1 s of whole patches, then 12 more frames: a partial patch the clip alone drops
    short_encoder = BeatsEncoder(replace(checkpoint.encoder, input_tdim=clip_frames))
    short_encoder.load_state_dict(checkpoint.state_dict)
    short_model = BeatsWaveformModel(KaldiFbank(beats_fbank(clip_frames)), short_encoder).eval()
    clip_samples = short_model.frontend.config.window_samples + 12 * 160
    wave = torch.from_numpy(golden["wave"][:, :clip_samples])
    padded = torch.nn.functional.pad(wave, (0, long_model.frontend.config.window_samples - clip_samples))
    with torch.no_grad():
        alone = short_model(wave, full(3, clip_samples))
        masked = long_model(padded, full(3, clip_samples))
        unmasked = long_model(padded, full(3, padded.shape[1]))
    for got, expected in zip(masked, alone, strict=True):
        torch.testing.assert_close(got, expected, rtol=0, atol=2e-5)
    assert (unmasked[1] - alone[1]).abs().max() > 1e-2  # the mask matters: silence tokens move the logits


def test_a_clip_shorter_than_one_patch_keeps_the_first_patch(models):
    model = models["finetuned"]
    real = model.token_real(torch.tensor([0, 400, 31 * 160 + 399, 31 * 160 + 400]))  # (4, N): 2 patches = 32 frames
    assert real.sum(dim=1).tolist() == [8, 8, 8, 16]  # 8 mel patches per time patch
    with torch.no_grad():
        embedding, logits = model(torch.zeros(1, model.frontend.config.window_samples), torch.tensor([0]))
    assert torch.isfinite(embedding).all() and torch.isfinite(logits).all()


def test_relative_position_buckets_follow_the_t5_rule():
    buckets = relative_position_buckets(num_tokens=700, num_buckets=320, max_distance=800)
    half, exact = 160, 80
    assert buckets[0, 0] == 0 and buckets[5, 0] == 5 and buckets[0, 5] == half + 5  # exact, by direction
    assert buckets[0, exact - 1] == half + exact - 1 and buckets[0, exact] == half + exact  # log range starts
    assert buckets[0, 699] == half + exact + int(np.log(699 / exact) / np.log(800 / exact) * (half - exact))
    assert int(buckets.max()) <= 2 * half - 1
    torch.testing.assert_close(buckets[10:20, 10:20], buckets[:10, :10], rtol=0, atol=0)  # only the distance counts
