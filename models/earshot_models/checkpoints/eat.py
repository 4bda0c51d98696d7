"""EAT checkpoints (cwx-worst-one/EAT, fine-tuned fairseq `.pt`: EAT-base_epoch30_ft_AS2M.pt, ...) -> our EATEncoder.

The file is what fairseq saves: `{"args": None, "cfg": {...}, "model": state_dict, ...}` (other
entries, optimiser state and the like, are not read). `cfg` is the plain dict fairseq writes
(OmegaConf.to_container(..., enum_to_str=True)); `cfg["model"]` is MaeImageClassificationConfig
(`prediction_mode`, `use_fc_norm`, `target_length`, `num_classes`) with the pre-training config in
`pretrained_model_args` (`model.num_heads`, `norm_eps`, `layer_norm_first`, `modalities.image.*`).
The state dict is MaeImageClassificationModel's:

    model.modality_encoders.IMAGE.local_encoder.proj.{weight,bias}   Conv2d 1 -> D, 16x16, stride 16
    model.modality_encoders.IMAGE.extra_tokens                        (1, 1, D): the cls token
    model.modality_encoders.IMAGE.fixed_positional_encoder.positions  (1, max_length * 8, D): fixed sin-cos
    model.modality_encoders.IMAGE.context_encoder.norm.{weight,bias}  LayerNorm in front of the blocks
    model.blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}.* post-LN blocks
    fc_norm.*, head.*

Keys map one to one, nothing is transposed; the position table is loaded (never recomputed) and
cut to its first T' * F' rows (time-major, as the reference slices it). The number of heads is in
`cfg` (an argument only for files without one). Refused: pre-training checkpoints (no head;
`modality_encoders.*` at the top, `_ema`, decoder), prenet blocks, alibi, more than one extra token,
pre-LN (`layer_norm_first`) models and LIN_SOFTMAX pooling: none of the released fine-tuned files has them.

Hugging Face (`worstchan/EAT-*`, trust_remote_code) is a different layout, not read here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from earshot_models.checkpoints.encoder_checkpoint import (
    checked_labels,
    count_blocks,
    kaldi_frontend,
    require,
    square_patch,
)
from earshot_models.checkpoints.io import CheckpointError, load_torch_file, sha256_file
from earshot_models.checkpoints.mapping import Rule, convert_state_dict, module_shapes
from earshot_models.config import AST_FBANK, FbankConfig
from earshot_models.eat import EATConfig, EATEncoder
from earshot_models.frontend.kaldi_fbank import KaldiFbank
from earshot_models.waveform_model import WaveformModel

FORMAT = "eat-fairseq-pt"
KIND = "a fine-tuned EAT checkpoint"  # in errors: "...; not a fine-tuned EAT checkpoint?"
DEFAULT_WINDOW_SECONDS = 10.0  # 998 frames of the released models' 1024, the rest padded: a 10 s AudioSet clip
DEFAULT_TARGET_LENGTH = 1024  # MaeImageClassificationConfig.target_length
ENCODER = "model.modality_encoders.IMAGE."
POSITIONS = ENCODER + "fixed_positional_encoder.positions"
# EAT's AudioSet frontend (data/raw_audio_dataset.py, inference/inference.py): AST's Kaldi fbank (the clip
# mean removed, which the per-frame DC removal makes exact without it) with EAT's own statistics.
EAT_FBANK = replace(AST_FBANK, norm_mean=-4.268, norm_std=4.569)
PREDICTION_MODES = {"CLS_TOKEN": "cls", "MEAN_POOLING": "mean_patch"}

_RULES = [
    Rule(r"patch_embed\.proj\.(weight|bias)", (ENCODER + r"local_encoder.proj.\1",)),
    Rule(r"cls_token", (ENCODER + "extra_tokens",)),
    Rule(r"pos_embed", (POSITIONS,)),
    Rule(r"embed_norm\.(weight|bias)", (ENCODER + r"context_encoder.norm.\1",)),
    Rule(r"(blocks\.\d+\.[\w.]+)\.(weight|bias)", (r"model.\1.\2",)),
    Rule(r"(fc_norm|head)\.(weight|bias)", (r"\1.\2",)),
]


@dataclass
class EATCheckpoint:
    """A converted EAT checkpoint, and everything needed to build and describe the model."""

    frontend: FbankConfig
    encoder: EATConfig
    state_dict: dict[str, torch.Tensor]  # our keys (EATEncoder.state_dict())
    labels: list[str]
    weights_path: Path
    format: str
    table_time_patches: int  # time rows of the file's position table (the longest input it covers)

    def build(self) -> WaveformModel:
        """The waveform-in model, weights loaded with strict=True, in eval mode."""
        encoder = EATEncoder(self.encoder)
        encoder.load_state_dict(self.state_dict, strict=True)
        return WaveformModel(KaldiFbank(self.frontend), encoder).eval()

    def sha256(self) -> str:
        return sha256_file(self.weights_path)


def _section(mapping: Any, key: str) -> Mapping[str, Any]:
    value = mapping.get(key) if isinstance(mapping, Mapping) else None
    return value if isinstance(value, Mapping) else {}


def _enum_name(value: Any) -> str:
    """'CLS_TOKEN' from 'CLS_TOKEN' or 'PredictionMode.CLS_TOKEN' (as fairseq's enum_to_str may write it)."""
    return str(value).rsplit(".", 1)[-1]


def read_file(path: Path) -> tuple[dict[str, torch.Tensor], Mapping[str, Any]]:
    """(state dict, cfg) of a fairseq checkpoint file."""
    data = load_torch_file(path)
    if not isinstance(data, Mapping) or not isinstance(data.get("model"), Mapping):
        raise CheckpointError(f"{path}: expected a fairseq checkpoint {{'cfg': ..., 'model': state_dict}}; not {KIND}?")
    state = {}
    for key, value in data["model"].items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{path}: model entry {key!r} is not a named tensor; expected a state dict")
        state[key] = value
    cfg = data.get("cfg")
    return state, cfg if isinstance(cfg, Mapping) else {}


def encoder_config(
    state: Mapping[str, torch.Tensor], cfg: Mapping[str, Any], where: str, num_heads: int | None
) -> EATConfig:
    """Our EATConfig from the tensor shapes and the fairseq cfg of a fine-tuned EAT state dict."""
    if any(key.startswith(("modality_encoders.", "_ema", "blocks.")) for key in state):
        raise CheckpointError(
            f"{where}: an EAT pre-training checkpoint (Data2VecMultiModel keys: modality_encoders.*, _ema); only "
            "fine-tuned classifiers (model.*, fc_norm.*, head.*) are supported"
        )
    classifier = _section(cfg, "model")
    name = classifier.get("_name")
    if name is not None and name != "mae_image_classification":
        raise CheckpointError(f"{where}: cfg.model._name is {name!r}, not 'mae_image_classification'; not {KIND}?")
    pretrained = _section(_section(classifier, "pretrained_model_args"), "model")
    image = _section(_section(pretrained, "modalities"), "image")
    unsupported = [
        f"{key} = {image[key]!r}"
        for key, supported in (("prenet_depth", 0), ("num_extra_tokens", 1), ("use_alibi_encoder", False),
                               ("in_chans", 1))
        if key in image and image[key] != supported
    ]  # fmt: skip
    if pretrained.get("layer_norm_first", False):
        unsupported.append("layer_norm_first = True")
    if unsupported:
        raise CheckpointError(f"{where}: unsupported EAT configuration ({', '.join(unsupported)}); EAT's models have "
                              "prenet_depth 0, one extra token, no alibi, 1 channel and post-LN blocks")
    mode = _enum_name(classifier.get("prediction_mode", "CLS_TOKEN"))
    if mode not in PREDICTION_MODES:
        raise CheckpointError(f"{where}: prediction_mode {mode} is not supported (only {', '.join(PREDICTION_MODES)})")

    file_heads = pretrained.get("num_heads")
    if file_heads is not None and num_heads is not None and int(file_heads) != num_heads:
        raise CheckpointError(f"{where}: the file's cfg says {file_heads} attention heads, {num_heads} were given")
    if file_heads is None and num_heads is None:
        raise CheckpointError(f"{where}: the file has no cfg.model.pretrained_model_args.model.num_heads; give num_heads")
    heads = int(file_heads) if file_heads is not None else int(num_heads or 0)

    cls_token = require(state, ENCODER + "extra_tokens", where, KIND)
    if cls_token.ndim != 3 or cls_token.shape[:2] != (1, 1):
        raise CheckpointError(f"{where}: key {ENCODER + 'extra_tokens'!r} has shape {list(cls_token.shape)}, "
                              "expected [1, 1, D] (one cls token)")
    require(state, POSITIONS, where, KIND)
    head = state.get("head.weight")
    has_fc_norm = "fc_norm.weight" in state
    if "use_fc_norm" in classifier and bool(classifier["use_fc_norm"]) != has_fc_norm:
        raise CheckpointError(f"{where}: cfg use_fc_norm is {classifier['use_fc_norm']} but the file "
                              f"{'has' if has_fc_norm else 'has no'} fc_norm.*")
    try:
        return _validated(EATConfig(
            patch_size=square_patch(state, ENCODER + "local_encoder.proj.weight", where),
            input_fdim=EAT_FBANK.num_mel_bins,
            input_tdim=int(classifier.get("target_length", DEFAULT_TARGET_LENGTH)),
            embed_dim=int(cls_token.shape[-1]),
            depth=count_blocks(state, "model."),
            num_heads=heads,
            mlp_hidden_dim=int(require(state, "model.blocks.0.mlp.fc1.weight", where, KIND).shape[0]),
            qkv_bias="model.blocks.0.attn.qkv.bias" in state,
            layer_norm_eps=float(pretrained.get("norm_eps", 1e-6)),
            num_classes=int(head.shape[0]) if head is not None else 0,
            pooling=PREDICTION_MODES[mode],
            fc_norm=has_fc_norm,
        ), where)  # fmt: skip
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{where}: {error}") from error


def _validated(config: EATConfig, where: str) -> EATConfig:
    try:
        config.validate()
    except ValueError as error:
        raise CheckpointError(f"{where}: {error}") from error
    return config


def cut_positions(state: Mapping[str, torch.Tensor], config: EATConfig, where: str) -> tuple[dict, int]:
    """`state` with the position table cut to the model's first T' * F' rows; the table's time rows."""
    table = state[POSITIONS]
    _, mel_patches = config.grid
    if table.ndim != 3 or table.shape[0] != 1 or table.shape[2] != config.embed_dim or table.shape[1] % mel_patches:
        raise CheckpointError(f"{where}: key {POSITIONS!r} has shape {list(table.shape)}, expected "
                              f"[1, time rows * {mel_patches}, {config.embed_dim}]")
    rows = table.shape[1] // mel_patches
    if config.num_patches > table.shape[1]:
        raise CheckpointError(f"{where}: {config.input_tdim} frames make {config.grid[0]} time patches; the "
                              f"position table {POSITIONS!r} holds {rows}")
    return {**state, POSITIONS: table[:, : config.num_patches]}, rows


def eat_frontend(config: EATConfig, window_seconds: float, where: str) -> FbankConfig:
    """EAT's fbank for windows of `window_seconds`, padded (log-mel 0) to the model's target_length frames."""
    return kaldi_frontend(EAT_FBANK, config, window_seconds, where, limit="the model takes target_length")


def read_eat(
    path: str | Path,
    window_seconds: float = DEFAULT_WINDOW_SECONDS,
    num_heads: int | None = None,
    labels: list[str] | None = None,
) -> EATCheckpoint:
    """A fine-tuned EAT fairseq .pt for windows of `window_seconds` at 16 kHz (at most target_length
    frames: 10.24 s for the released files; a shorter window is padded as the reference pads a
    short clip). num_heads: only for files whose cfg lacks it. labels: one per class; `class_<i>` when None."""
    path = Path(path)
    where = str(path)
    state, cfg = read_file(path)
    encoder = encoder_config(state, cfg, where, num_heads)
    source, table_rows = cut_positions(state, encoder, where)
    expected = module_shapes(EATEncoder, encoder)
    converted = convert_state_dict(source, expected, _RULES, where=where)
    return EATCheckpoint(
        frontend=eat_frontend(encoder, window_seconds, where),
        encoder=encoder,
        state_dict=converted,
        labels=checked_labels(labels, encoder.num_classes, where),
        weights_path=path,
        format=FORMAT,
        table_time_patches=table_rows,
    )
