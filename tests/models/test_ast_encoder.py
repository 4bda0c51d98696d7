"""Our ASTEncoder, loaded from transformers AST checkpoints, against ASTForAudioClassification."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from earshot_models.checkpoints.ast import read_hf_checkpoint
from tests.models.ast_fixtures import CLIPS, NON_DEFAULT, TINY, randomise_unit_scale, window_batch

LOGITS_TOLERANCE = 1e-4  # given the same features
END_TO_END_TOLERANCE = 1e-4  # waveform in (measured: 4e-6; the fbanks differ by <= 2e-4 near the log floor)
# transformers warns that Kaldi's lowest mel triangles (narrower than one FFT bin) are all zero: they are, in Kaldi too.
pytestmark = pytest.mark.filterwarnings("ignore:At least one mel filter has all zero values")


def reference_outputs(model, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        pooled = model.audio_spectrogram_transformer(features).pooler_output
        return pooled, model(features).logits


def real_features(clips, checkpoint) -> torch.Tensor:
    """Our frontend's output for three real clips: the features both models get."""
    frontend = checkpoint.build().frontend
    waves = [clips[name] for name in CLIPS[:3]]
    with torch.no_grad():
        return frontend(*window_batch(waves, frontend.window_samples))


@pytest.mark.parametrize("overrides", [{}, NON_DEFAULT], ids=["ast-default-geometry", "strides-12-8-300x64"])
def test_logits_match_transformers(make_hf_checkpoint, clips, overrides):
    directory, reference = make_hf_checkpoint(seed=1, **overrides)
    checkpoint = read_hf_checkpoint(directory)
    config = reference.config
    assert (checkpoint.encoder.fstride, checkpoint.encoder.tstride) == (config.frequency_stride, config.time_stride)
    assert (checkpoint.fbank.num_frames, checkpoint.fbank.num_mel_bins) == (config.max_length, config.num_mel_bins)
    encoder = checkpoint.build().encoder
    features = real_features(clips, checkpoint)
    noise = torch.randn(2, config.max_length, config.num_mel_bins, generator=torch.Generator().manual_seed(0))
    for batch in (features, noise):
        expected_embedding, expected_logits = reference_outputs(reference, batch)
        with torch.no_grad():
            embedding, logits = encoder(batch)
        assert logits.shape == expected_logits.shape == (batch.shape[0], 7)
        assert expected_logits.abs().max() > 0.5  # unit-scale weights: the logits are not near zero
        torch.testing.assert_close(logits, expected_logits, rtol=0, atol=LOGITS_TOLERANCE)
        torch.testing.assert_close(embedding, expected_embedding, rtol=0, atol=LOGITS_TOLERANCE)


@pytest.mark.parametrize("overrides", [{}, NON_DEFAULT], ids=["ast-default-geometry", "strides-12-8-300x64"])
def test_waveform_to_logits_matches_feature_extractor_and_model(
    make_hf_checkpoint, clips, force_numpy_feature_extractor, overrides
):
    from transformers import ASTFeatureExtractor

    directory, reference = make_hf_checkpoint(seed=2, **overrides)
    model = read_hf_checkpoint(directory).build()
    extractor = ASTFeatureExtractor(num_mel_bins=reference.config.num_mel_bins, max_length=reference.config.max_length)
    waves = [clips[name] for name in CLIPS]
    features = extractor(waves, sampling_rate=16000, return_tensors="pt")["input_values"]
    expected_embedding, expected_logits = reference_outputs(reference, features)
    with torch.no_grad():
        embedding, logits = model(*window_batch(waves, model.frontend.window_samples))
    assert np.abs((logits - expected_logits).numpy()).max() < END_TO_END_TOLERANCE
    assert np.abs((embedding - expected_embedding).numpy()).max() < END_TO_END_TOLERANCE


def test_transformers_v5_in_memory_layout_loads_too(make_hf_checkpoint, tmp_path):
    """A state_dict() taken from transformers >= 5 in memory has q_proj/k_proj/v_proj names."""
    from safetensors.torch import save_file

    directory, reference = make_hf_checkpoint(seed=3, max_length=120)
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text((directory / "config.json").read_text())
    features = torch.randn(2, 120, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        _, logits = read_hf_checkpoint(tmp_path).build().encoder(features)
    torch.testing.assert_close(logits, reference_outputs(reference, features)[1], rtol=0, atol=LOGITS_TOLERANCE)


def test_labels_and_frontend_settings_come_from_the_checkpoint(make_hf_checkpoint):
    from transformers import ASTFeatureExtractor

    directory, _ = make_hf_checkpoint(seed=4, num_labels=3, max_length=128)
    ASTFeatureExtractor(max_length=128, mean=-6.6268077, std=5.358466).save_pretrained(directory)  # ESC-50 stats
    checkpoint = read_hf_checkpoint(directory)
    assert checkpoint.labels == ["tag 0", "tag 1", "tag 2"]
    assert (checkpoint.fbank.norm_mean, checkpoint.fbank.norm_std) == (-6.6268077, 5.358466)
    assert checkpoint.fbank.window_samples == 127 * 160 + 400
    assert checkpoint.encoder.layer_norm_eps == 1e-12  # transformers' AST config value, not timm's


def test_ast_model_checkpoint_without_head_gives_embeddings_only(tmp_path):
    from transformers import ASTConfig, ASTModel

    reference = ASTModel(ASTConfig(**TINY, max_length=120))
    randomise_unit_scale(reference, seed=8)
    reference.eval().save_pretrained(tmp_path)
    checkpoint = read_hf_checkpoint(tmp_path)
    assert checkpoint.encoder.num_classes == 0 and checkpoint.labels == []
    features = torch.randn(2, 120, 128, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        embedding, logits = checkpoint.build().encoder(features)
        expected = reference(features).pooler_output
    assert logits is None
    torch.testing.assert_close(embedding, expected, rtol=0, atol=LOGITS_TOLERANCE)
