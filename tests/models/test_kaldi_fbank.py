"""The in-graph Kaldi fbank against transformers' ASTFeatureExtractor (numpy path), on real clips."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from earshot_models.config import AST_FBANK
from earshot_models.frontend.kaldi_fbank import KaldiFbank, kaldi_mel_banks
from tests.models.ast_fixtures import CLIPS, window_batch

TOLERANCE = 1e-3  # absolute, after normalisation
# transformers warns that Kaldi's lowest mel triangles (narrower than one FFT bin) are all zero: they are, in Kaldi too.
pytestmark = pytest.mark.filterwarnings("ignore:At least one mel filter has all zero values")


def reference_features(waves, force_numpy_feature_extractor, **kwargs) -> np.ndarray:
    from transformers import ASTFeatureExtractor

    extractor = ASTFeatureExtractor(**kwargs)
    assert hasattr(extractor, "mel_filters"), "ASTFeatureExtractor did not take its numpy path"
    return extractor(waves, sampling_rate=16000, return_tensors="np")["input_values"]


def test_matches_ast_feature_extractor_batched(clips, force_numpy_feature_extractor):
    waves = [clips[name] for name in CLIPS]
    lengths = [len(wave) for wave in waves]
    frontend = KaldiFbank(AST_FBANK)
    assert max(lengths) > frontend.window_samples > min(lengths)  # one is cut, others are padded
    waveform, num_samples = window_batch(waves, frontend.window_samples)
    with torch.no_grad():
        ours = frontend(waveform, num_samples).numpy()
    expected = reference_features(waves, force_numpy_feature_extractor)
    assert ours.shape == expected.shape == (len(waves), 1024, 128)
    error = np.abs(ours - expected).max(axis=(1, 2))
    assert (error < TOLERANCE).all(), dict(zip(CLIPS, error, strict=True))
    # The padded rows are AST's: log-mel 0, normalised.
    padded_value = (0.0 - AST_FBANK.norm_mean) / (2 * AST_FBANK.norm_std)
    short = CLIPS.index("speech_french.ogg")
    real_frames = 1 + (lengths[short] - 400) // 160
    np.testing.assert_allclose(ours[short, real_frames:], padded_value, atol=1e-6)
    assert np.abs(ours[short, real_frames - 1] - padded_value).max() > 0.1


def test_non_default_frames_and_mel_bins(clips, force_numpy_feature_extractor):
    config = replace(AST_FBANK, num_frames=300, num_mel_bins=64)
    waves = [clips["music_piano.flac"], clips["speech_french.ogg"]]
    frontend = KaldiFbank(config)
    waveform, num_samples = window_batch(waves, frontend.window_samples)
    with torch.no_grad():
        ours = frontend(waveform, num_samples).numpy()
    expected = reference_features(waves, force_numpy_feature_extractor, num_mel_bins=64, max_length=300)
    assert ours.shape == expected.shape == (2, 300, 64)
    assert np.abs(ours - expected).max() < TOLERANCE


def test_any_input_length_is_cut_or_padded_to_the_window(clips):
    frontend = KaldiFbank(AST_FBANK)
    wave = torch.from_numpy(clips["speech_spanish_16s.ogg"])[None]  # (1, 15.7 s)
    count = torch.tensor([wave.shape[1]])
    with torch.no_grad():
        full = frontend(wave, count)
        cut = frontend(wave[:, : frontend.window_samples], count)
        short = frontend(wave[:, :20000], torch.tensor([20000]))
        padded = frontend(torch.nn.functional.pad(wave[:, :20000], (0, 30000)), torch.tensor([20000]))
    torch.testing.assert_close(full, cut, rtol=0, atol=0)
    torch.testing.assert_close(short, padded, rtol=0, atol=0)


def test_shorter_than_one_frame_is_all_padding():
    frontend = KaldiFbank(AST_FBANK)
    waveform = torch.zeros(2, frontend.window_samples)
    waveform[:, :399] = 0.5
    with torch.no_grad():
        out = frontend(waveform, torch.tensor([399, 0]))
    padded_value = (0.0 - AST_FBANK.norm_mean) / (2 * AST_FBANK.norm_std)
    torch.testing.assert_close(out, torch.full_like(out, padded_value))


def test_mel_banks_match_transformers_kaldi_banks():
    from transformers.audio_utils import mel_filter_bank

    reference = mel_filter_bank(
        num_frequency_bins=257,
        num_mel_filters=128,
        min_frequency=20,
        max_frequency=8000,
        sampling_rate=16000,
        norm=None,
        mel_scale="kaldi",
        triangularize_in_mel_space=True,
    )
    np.testing.assert_allclose(kaldi_mel_banks(AST_FBANK), reference.T, rtol=0, atol=1e-12)


@pytest.mark.parametrize("field,value", [("window", "blackman"), ("frame_length", 1024), ("norm_std", 0.0)])
def test_bad_config_is_refused(field, value):
    with pytest.raises(ValueError, match=field):
        KaldiFbank(replace(AST_FBANK, **{field: value}))
