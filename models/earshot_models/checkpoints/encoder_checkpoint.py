"""What the converters of the AST family (AST, PaSST, Audio-MAE, SSAST) hand on: the
frontend and encoder configs, the converted state dict, labels; and the helpers they share."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from earshot_models.ast import ASTEncoder
from earshot_models.checkpoints.io import CheckpointError, sha256_file
from earshot_models.checkpoints.mapping import Rule, convert_state_dict, module_shapes
from earshot_models.config import AST_FBANK, EncoderConfig, FbankConfig, StftMelConfig, frames_in_window
from earshot_models.eat import EATConfig
from earshot_models.frontend.kaldi_fbank import KaldiFbank
from earshot_models.frontend.passt_mel import PasstMel
from earshot_models.waveform_model import WaveformModel


@dataclass(frozen=True)
class EncoderCheckpoint:
    """A checkpoint converted to our layout, and everything needed to build and describe the model."""

    frontend: FbankConfig | StftMelConfig
    encoder: EncoderConfig
    state_dict: dict[str, torch.Tensor]  # our keys (ASTEncoder.state_dict())
    labels: list[str]
    weights_path: Path  # the file whose sha256 identifies the checkpoint
    format: str

    def build(self) -> WaveformModel:
        """The waveform-in model, weights loaded with strict=True, in eval mode."""
        encoder = ASTEncoder(self.encoder)
        encoder.load_state_dict(self.state_dict, strict=True)
        frontend = PasstMel(self.frontend) if isinstance(self.frontend, StftMelConfig) else KaldiFbank(self.frontend)
        return WaveformModel(frontend, encoder).eval()

    def sha256(self) -> str:
        return sha256_file(self.weights_path)


def expected_shapes(config: EncoderConfig) -> dict[str, torch.Size]:
    """Our keys and shapes for `config` (built on the meta device: no memory, no init)."""
    return module_shapes(ASTEncoder, config)


def require(state: Mapping[str, torch.Tensor], key: str, where: str, kind: str) -> torch.Tensor:
    """state[key]; CheckpointError when absent. kind: what the file should be ("a PaSST checkpoint")."""
    if key not in state:
        raise CheckpointError(f"{where}: missing key {key!r}; not {kind}?")
    return state[key]


def count_blocks(state: Mapping[str, torch.Tensor], prefix: str) -> int:
    """Transformer blocks in the file: the distinct N of `{prefix}blocks.N.*`."""
    return len({m.group(1) for key in state if (m := re.fullmatch(rf"{re.escape(prefix)}blocks\.(\d+)\..*", key))})


def square_patch(state: Mapping[str, torch.Tensor], key: str, where: str) -> int:
    """The patch size from the patch conv weight (D, 1, p, p)."""
    proj = state[key]
    if proj.ndim != 4 or proj.shape[1] != 1 or proj.shape[2] != proj.shape[3]:
        raise CheckpointError(f"{where}: key {key!r} has shape {list(proj.shape)}, expected [D, 1, p, p]")
    return int(proj.shape[2])


def validated(config: EncoderConfig, where: str) -> EncoderConfig:
    try:
        config.validate()
    except ValueError as error:
        raise CheckpointError(f"{where}: {error}") from error
    return config


def checked_labels(labels: list[str] | None, num_classes: int, where: str) -> list[str]:
    """The given labels (one per class), or `class_<i>` when none are given."""
    if labels is None:
        return [f"class_{index}" for index in range(num_classes)]
    if len(labels) != num_classes:
        raise CheckpointError(f"{where}: {len(labels)} labels given for a head with {num_classes} classes")
    return list(labels)


def kaldi_frontend(
    base: FbankConfig,
    encoder: EncoderConfig | EATConfig,
    window_seconds: float,
    where: str,
    limit: str = "the model's position table holds",
) -> FbankConfig:
    """The Kaldi fbank (`base`, e.g. AST's dataloader) for windows of `window_seconds`, padded to the
    model's frames; encoder: its config (input_tdim, input_fdim: EncoderConfig, EATConfig); limit: what
    the error calls the model's frame count."""
    fbank = replace(base, num_frames=encoder.input_tdim, num_mel_bins=encoder.input_fdim)
    try:
        frames = frames_in_window(fbank, window_seconds)
    except ValueError as error:
        raise CheckpointError(f"{where}: {error}") from error
    if frames > fbank.num_frames:
        longest = ((fbank.num_frames - 1) * fbank.frame_shift + fbank.frame_length) / fbank.sample_rate
        raise CheckpointError(
            f"{where}: a {window_seconds:g} s window makes {frames} frames; {limit} "
            f"{fbank.num_frames} (windows up to {longest:g} s)"
        )
    return replace(fbank, window_frames=frames)


def kaldi_checkpoint(
    path: Path,
    state: Mapping[str, torch.Tensor],
    encoder: EncoderConfig,
    rules: Sequence[Rule],
    ignore: str | None,
    window_seconds: float,
    labels: list[str] | None,
    format: str,
) -> EncoderCheckpoint:
    """The end of the Audio-MAE and SSAST converters (both take AST's dataloader fbank): `state`
    converted to our keys, the frontend for windows of `window_seconds`, the labels checked."""
    where = str(path)
    converted = convert_state_dict(state, expected_shapes(encoder), rules, where=where, ignore=ignore)
    return EncoderCheckpoint(
        frontend=kaldi_frontend(AST_FBANK, encoder, window_seconds, where),
        encoder=encoder,
        state_dict=converted,
        labels=checked_labels(labels, encoder.num_classes, where),
        weights_path=path,
        format=format,
    )
