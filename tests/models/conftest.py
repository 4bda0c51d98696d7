"""Fixtures of the model tests: real clips at 16 kHz, and small random transformers AST checkpoints."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.models.ast_fixtures import CLIPS, TINY, randomise_unit_scale, read_clip


@pytest.fixture(scope="session")
def clips(audio_dir: Path) -> dict[str, np.ndarray]:
    return {name: read_clip(audio_dir / name) for name in CLIPS}


@pytest.fixture(scope="session")
def make_hf_checkpoint(tmp_path_factory) -> Callable[..., tuple[Path, torch.nn.Module]]:
    """save_pretrained directory of a tiny random ASTForAudioClassification, and the model (eval, eager attention)."""
    from transformers import ASTConfig, ASTForAudioClassification

    def make(seed: int = 0, num_labels: int = 7, **overrides) -> tuple[Path, torch.nn.Module]:
        id2label = {index: f"tag {index}" for index in range(num_labels)}
        config = ASTConfig(**{**TINY, **overrides}, id2label=id2label, label2id={v: k for k, v in id2label.items()})
        model = ASTForAudioClassification(config)
        randomise_unit_scale(model, seed)
        model.eval()
        directory = tmp_path_factory.mktemp("hf-ast")
        model.save_pretrained(directory)
        model.config._attn_implementation = "eager"  # the plain-math reference
        return directory, model

    return make


@pytest.fixture
def force_numpy_feature_extractor(monkeypatch):
    """ASTFeatureExtractor takes its torchaudio path whenever torchaudio imports; we compare with
    its numpy path (the reference arithmetic in float64), so make it believe torchaudio is absent."""
    from transformers.models.audio_spectrogram_transformer import feature_extraction_audio_spectrogram_transformer as fe

    monkeypatch.setattr(fe, "is_speech_available", lambda: False)
