"""CLAP's in-graph frontend against ClapFeatureExtractor (numpy path), and the audio tower against
transformers' ClapModel, on real clips, with a tiny random checkpoint."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from earshot_models.checkpoints.clap import read_clap_checkpoint, with_window
from earshot_models.clap.config import CLAP_UNFUSED_FRONTEND
from earshot_models.clap.frontend import ClapFrontend
from earshot_models.clap.mel import mel_filter_bank
from tests.models.ast_fixtures import window_batch
from tests.models.clap_fixtures import UNFUSED_EXTRACTOR, make_clap_dir, read_clip

# 0.8 s, 2.8 s (stereo), 2.0 s, 0.05 s (shorter than one hop), 9.97 s (one window, no repeat)
CLIPS = ("speech_french.ogg", "music_piano.flac", "bird_crow.ogg", "short_50ms.wav", "music_guitar.flac")
# dB. The extractor works in float64 and our graph in float32: the framing conv's float32 rounding
# is ~1e-7 of a frame's loudest bins, so bins far below their frame's peak carry relative noise
# (piano: 0.02 dB at the -100 dB floor). Bins within 60 dB of their frame's loudest mel bin hold 1e-3.
FRONTEND_ATOL = 1e-3
FRONTEND_ATOL_ANYWHERE = 0.05  # within FLOAT32_FLOOR_DB of the frame's peak
WITHIN_DB_OF_FRAME_PEAK = 60.0
# More than 100 dB under its frame's peak a bin's power is under 1e-10 of the peak's, which is where a
# float32 DFT's rounding lives (1024-term sums, ~1e-7 of the peak's amplitude): there any float32
# DFT differs from the extractor's float64 one by tenths of a dB (measured, real clips: direct DFT
# 0.021 dB, the two-stage DFT 0.143 dB; under 100 dB: 0.006 and 0.037).
FLOAT32_FLOOR_DB = 100.0
FRONTEND_ATOL_UNDER_FLOOR = 0.25


@pytest.fixture(scope="module")
def waves(audio_dir) -> dict[str, np.ndarray]:
    return {name: read_clip(audio_dir / name) for name in CLIPS}


def extractor(**overrides):
    from transformers import ClapFeatureExtractor

    return ClapFeatureExtractor(**{**UNFUSED_EXTRACTOR, **overrides})


@pytest.mark.parametrize(("scale", "norm"), [("slaney", "slaney"), ("htk", None)])
def test_mel_banks_are_transformers_banks(scale, norm):
    from transformers.audio_utils import mel_filter_bank as reference

    ours = mel_filter_bank(513, 64, 50.0, 14000.0, 48000, scale, norm)
    np.testing.assert_allclose(ours, reference(513, 64, 50.0, 14000.0, 48000, norm=norm, mel_scale=scale), atol=1e-12)


@pytest.mark.parametrize(
    ("padding", "top_db", "seconds"), [("repeatpad", None, 10.0), ("repeat", None, 4.0), ("pad", 60.0, 4.0)]
)
def test_frontend_matches_the_feature_extractor(waves, padding, top_db, seconds):
    """top_db: the extractor stores it and never applies it; a config saying 60 changes nothing."""
    config = replace(CLAP_UNFUSED_FRONTEND, padding=padding, window_samples=int(seconds * 48000))
    clips = [waves[name][: config.window_samples] for name in CLIPS]  # longer clips are cut at random by the extractor
    expected = extractor(padding=padding, top_db=top_db)(
        clips, sampling_rate=48000, max_length=config.window_samples, return_tensors="np"
    )["input_features"][:, 0]
    waveform, num_samples = window_batch(clips, config.window_samples)
    with torch.no_grad():
        got = ClapFrontend(config)(waveform, num_samples).numpy()
    assert got.shape == expected.shape == (len(CLIPS), config.num_frames, 64)
    error = np.abs(got - expected)
    below_peak = expected.max(axis=2, keepdims=True) - expected  # (clips, frames, mel) dB under the frame's peak
    assert error[below_peak < WITHIN_DB_OF_FRAME_PEAK].max() <= FRONTEND_ATOL
    assert error[below_peak < FLOAT32_FLOOR_DB].max() <= FRONTEND_ATOL_ANYWHERE
    assert error.max() <= FRONTEND_ATOL_UNDER_FLOOR


@pytest.fixture(scope="module")
def clap_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("clap") / "clap-tiny"
    model = make_clap_dir(directory, seed=7)
    return directory, model


@pytest.mark.slow
def test_audio_tower_matches_clap_model(clap_dir, waves):
    from transformers import AutoTokenizer

    directory, reference = clap_dir
    labels = ["speech", "music", "bird"]
    checkpoint = read_clap_checkpoint(directory, labels=labels, prompt="the sound of {}")
    assert checkpoint.prompts == ["the sound of speech", "the sound of music", "the sound of bird"]
    module = checkpoint.build()
    clips = [waves[name] for name in CLIPS]
    features = extractor()(clips, sampling_rate=48000, return_tensors="pt")["input_features"].float()
    tokens = AutoTokenizer.from_pretrained(directory)(checkpoint.prompts, padding=True, return_tensors="pt")
    waveform, num_samples = window_batch(clips, checkpoint.frontend.window_samples)
    with torch.no_grad():
        expected = reference(input_features=features, **tokens)
        audio = reference.get_audio_features(input_features=features).pooler_output
        embedding, logits = module(waveform, num_samples)
    cosine = torch.nn.functional.cosine_similarity(embedding, audio)
    assert cosine.min() >= 0.9999
    torch.testing.assert_close(embedding.norm(dim=-1), torch.ones(len(CLIPS)), rtol=0, atol=1e-5)
    torch.testing.assert_close(logits, expected.logits_per_audio, rtol=0, atol=1e-3)


def test_a_shorter_window_is_the_extractor_at_that_max_length(clap_dir, waves):
    directory, reference = clap_dir
    checkpoint = with_window(read_clap_checkpoint(directory), 4.0)
    assert checkpoint.frontend.window_samples == 192000 and checkpoint.frontend.num_frames == 401
    clips = [waves[name][:192000] for name in ("music_guitar.flac", "bird_crow.ogg")]
    features = extractor()(clips, sampling_rate=48000, max_length=192000, return_tensors="pt")["input_features"]
    waveform, num_samples = window_batch(clips, 192000)
    with torch.no_grad():
        audio = reference.get_audio_features(input_features=features.float()).pooler_output
        embedding, logits = checkpoint.build()(waveform, num_samples)
    assert logits is None
    assert torch.nn.functional.cosine_similarity(embedding, audio).min() >= 0.9999
