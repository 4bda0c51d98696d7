"""BEATs checkpoints (microsoft/unilm `beats/`, the released `BEATs_iter3*.pt` files) -> our BeatsEncoder.

A file is `torch.save({"cfg": dict, "model": state_dict[, "label_dict": {index: label}]})`; it is
read with weights_only=True (no code from the file runs). The cfg is BEATs' own BEATsConfig as a
dict; fields that change the arithmetic are checked (post-LN only, GELU only), the geometry and
widths are read, dropouts are ignored (inference).

Keys (theirs -> ours), nothing transposed:
  patch_embedding.weight                          -> patch_embed.weight (bias-free Conv2d)
  layer_norm.*, post_extract_proj.*               -> patch_norm.*, proj.*
  encoder.pos_conv.0.weight_g / weight_v          -> pos_conv.conv.weight, weight norm folded:
      weight = g * v / ||v||, the norm over dims (0, 1) for each kernel tap (weight_norm dim=2);
      torch's newer parametrization names (parametrizations.weight.original0 / original1) too
  encoder.pos_conv.0.bias                         -> pos_conv.conv.bias
  encoder.layer_norm.*                            -> norm.*
  encoder.layers.N.self_attn.{q,k,v}_proj.*       -> layers.N.attn.qkv.* (concatenated, q k v)
  encoder.layers.N.self_attn.out_proj.*           -> layers.N.attn.proj.*
  encoder.layers.N.self_attn.grep_linear.*, grep_a -> layers.N.attn.gate.*, gate_a
  encoder.layers.0.self_attn.relative_attention_bias.weight -> rel_pos.embedding.weight; the
      reference shares layer 0's table with every layer, and state_dict() writes it under each
      layer's name: those copies must equal layer 0's
  encoder.layers.N.self_attn_layer_norm.*, final_layer_norm.* -> layers.N.norm1.*, norm2.*
  encoder.layers.N.fc1.*, fc2.*                   -> layers.N.mlp.fc1.*, fc2.*
  predictor.*                                     -> head.* (fine-tuned files)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from earshot_models.beats.config import DEFAULT_WINDOW_SECONDS, BeatsConfig, beats_fbank, frames_for_window
from earshot_models.beats.encoder import BeatsEncoder
from earshot_models.beats.model import BeatsWaveformModel
from earshot_models.checkpoints.io import CheckpointError, load_torch_file, sha256_file
from earshot_models.checkpoints.mapping import Rule, convert_state_dict, module_shapes
from earshot_models.config import FbankConfig
from earshot_models.frontend.kaldi_fbank import KaldiFbank

FORMAT = "beats-pt"
POS_CONV = "encoder.pos_conv.0"
FOLDED_POS_CONV_WEIGHT = f"{POS_CONV}.weight"  # the folded weight, under the name weight norm hides
LAYER_NORM_EPS = 1e-5  # torch.nn.LayerNorm's default, which BEATs uses everywhere

_RULES = [
    Rule(r"patch_embed\.weight", (r"patch_embedding.weight",)),
    Rule(r"patch_norm\.(weight|bias)", (r"layer_norm.\1",)),
    Rule(r"proj\.(weight|bias)", (r"post_extract_proj.\1",)),
    Rule(r"pos_conv\.conv\.(weight|bias)", (rf"{POS_CONV}.\1",)),
    Rule(r"norm\.(weight|bias)", (r"encoder.layer_norm.\1",)),
    Rule(r"rel_pos\.embedding\.weight", (r"encoder.layers.0.self_attn.relative_attention_bias.weight",)),
    Rule(
        r"layers\.(\d+)\.attn\.qkv\.(weight|bias)",
        tuple(rf"encoder.layers.\1.self_attn.{name}_proj.\2" for name in ("q", "k", "v")),
    ),
    Rule(r"layers\.(\d+)\.attn\.proj\.(weight|bias)", (r"encoder.layers.\1.self_attn.out_proj.\2",)),
    Rule(r"layers\.(\d+)\.attn\.gate\.(weight|bias)", (r"encoder.layers.\1.self_attn.grep_linear.\2",)),
    Rule(r"layers\.(\d+)\.attn\.gate_a", (r"encoder.layers.\1.self_attn.grep_a",)),
    Rule(r"layers\.(\d+)\.norm1\.(weight|bias)", (r"encoder.layers.\1.self_attn_layer_norm.\2",)),
    Rule(r"layers\.(\d+)\.mlp\.(fc1|fc2)\.(weight|bias)", (r"encoder.layers.\1.\2.\3",)),
    Rule(r"layers\.(\d+)\.norm2\.(weight|bias)", (r"encoder.layers.\1.final_layer_norm.\2",)),
    Rule(r"head\.(weight|bias)", (r"predictor.\1",)),
]
_SHARED_TABLE = re.compile(r"encoder\.layers\.([1-9]\d*)\.self_attn\.relative_attention_bias\.weight")


@dataclass(frozen=True)
class BeatsCheckpoint:
    """A BEATs file converted to our layout, and everything needed to build and describe the model."""

    fbank: FbankConfig
    encoder: BeatsConfig
    state_dict: dict[str, torch.Tensor]  # our keys (BeatsEncoder.state_dict())
    labels: list[str]  # label_dict values in index order; [] for a pre-trained file
    weights_path: Path
    format: str = FORMAT

    @property
    def finetuned(self) -> bool:
        return self.encoder.num_classes > 0

    def build(self) -> BeatsWaveformModel:
        """The waveform-in model, weights loaded with strict=True, in eval mode."""
        encoder = BeatsEncoder(self.encoder)
        encoder.load_state_dict(self.state_dict, strict=True)
        return BeatsWaveformModel(KaldiFbank(self.fbank), encoder).eval()

    def sha256(self) -> str:
        return sha256_file(self.weights_path)


def read_beats_file(path: str | Path) -> dict[str, Any]:
    """The {"cfg", "model"[, "label_dict"]} dict of a BEATs .pt, checked for its layout."""
    path = Path(path)
    data = load_torch_file(path)
    if not isinstance(data, Mapping) or not isinstance(data.get("cfg"), Mapping) or not isinstance(
        data.get("model"), Mapping
    ):
        keys = sorted(map(str, data)) if isinstance(data, Mapping) else type(data).__name__
        raise CheckpointError(f"{path}: expected a BEATs file, a dict with 'cfg' and 'model'; got {keys}")
    for key, value in data["model"].items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{path}: model entry {key!r} is not a named tensor")
    return dict(data)


def encoder_config(cfg: Mapping[str, Any], state: Mapping[str, torch.Tensor], input_tdim: int, where: str) -> BeatsConfig:
    """Our BeatsConfig from a BEATs cfg dict (BEATsConfig's defaults for absent fields)."""
    if cfg.get("layer_norm_first", False):
        raise CheckpointError(f"{where}: cfg layer_norm_first=True (pre-LN) is not a BEATs layout we run")
    if cfg.get("activation_fn", "gelu") != "gelu":
        raise CheckpointError(f"{where}: cfg activation_fn {cfg['activation_fn']!r} not supported (only 'gelu')")
    patch_size = int(cfg.get("input_patch_size", -1))
    if patch_size <= 0:
        raise CheckpointError(f"{where}: cfg input_patch_size {patch_size} (BEATs files record 16)")
    finetuned = bool(cfg.get("finetuned_model", False))
    if finetuned != ("predictor.weight" in state):
        raise CheckpointError(
            f"{where}: cfg finetuned_model={finetuned} but the weights {'lack' if finetuned else 'have'} 'predictor.weight'"
        )
    try:
        config = BeatsConfig(
            patch_size=patch_size,
            patch_embed_dim=int(cfg.get("embed_dim", 512)),
            embed_dim=int(cfg.get("encoder_embed_dim", 768)),
            depth=int(cfg.get("encoder_layers", 12)),
            num_heads=int(cfg.get("encoder_attention_heads", 12)),
            ffn_dim=int(cfg.get("encoder_ffn_embed_dim", 3072)),
            conv_pos=int(cfg.get("conv_pos", 128)),
            conv_pos_groups=int(cfg.get("conv_pos_groups", 16)),
            relative_position=bool(cfg.get("relative_position_embedding", False)),
            num_buckets=int(cfg.get("num_buckets", 320)),
            max_distance=int(cfg.get("max_distance", 1280)),
            gated_relative_position=bool(cfg.get("gru_rel_pos", False)),
            deep_norm=bool(cfg.get("deep_norm", False)),
            layer_norm_eps=LAYER_NORM_EPS,
            num_classes=int(cfg.get("predictor_class", 527)) if finetuned else 0,
            input_tdim=input_tdim,
        )
        config.validate()
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{where}: cfg: {error}") from error
    return config


def fold_weight_norm(g: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """weight = g * v / ||v||, the norm taken over every dim where g has size 1 (weight_norm's `dim`)."""
    dims = tuple(axis for axis in range(v.dim()) if g.shape[axis] == 1)
    return g * v / v.norm(dim=dims, keepdim=True)


def _fold_pos_conv(state: Mapping[str, torch.Tensor], where: str) -> dict[str, torch.Tensor]:
    """`state` with the pos conv's weight norm folded into one weight, shapes checked."""
    state = dict(state)
    for g_key, v_key in (
        (f"{POS_CONV}.weight_g", f"{POS_CONV}.weight_v"),
        (f"{POS_CONV}.parametrizations.weight.original0", f"{POS_CONV}.parametrizations.weight.original1"),
    ):
        if g_key in state and v_key in state:
            g, v = state.pop(g_key), state.pop(v_key)
            if g.dim() != v.dim() or any(a not in (1, b) for a, b in zip(g.shape, v.shape, strict=True)):
                raise CheckpointError(f"{where}: {g_key} {list(g.shape)} does not fit {v_key} {list(v.shape)}")
            state[FOLDED_POS_CONV_WEIGHT] = fold_weight_norm(g.double(), v.double()).float()
            return state
    if FOLDED_POS_CONV_WEIGHT not in state:
        raise CheckpointError(f"{where}: missing key '{POS_CONV}.weight_g' / '{POS_CONV}.weight_v' (the position conv)")
    return state


def _check_shared_tables(state: Mapping[str, torch.Tensor], where: str) -> None:
    table = state.get("encoder.layers.0.self_attn.relative_attention_bias.weight")
    for key, value in state.items():
        if _SHARED_TABLE.fullmatch(key) and (table is None or value.shape != table.shape or not torch.equal(value, table)):
            raise CheckpointError(f"{where}: {key} differs from layer 0's table, which BEATs shares with every layer")


def read_labels(label_dict: Any, num_classes: int, where: str) -> list[str]:
    """label_dict {index: label} -> labels in index order (the ids as the file has them)."""
    if num_classes == 0:
        return []
    if label_dict is None:
        return [f"class_{index}" for index in range(num_classes)]
    try:
        labels = {int(index): str(label) for index, label in dict(label_dict).items()}
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{where}: label_dict must map class indices to labels: {error}") from error
    if sorted(labels) != list(range(num_classes)):
        raise CheckpointError(f"{where}: label_dict has {len(labels)} entries, the predictor {num_classes} classes")
    return [labels[index] for index in range(num_classes)]


def read_beats_checkpoint(path: str | Path, window_seconds: float = DEFAULT_WINDOW_SECONDS) -> BeatsCheckpoint:
    """A BEATs .pt, converted for a bundle with windows of `window_seconds` (cut to whole patches)."""
    path = Path(path)
    where = str(path)
    data = read_beats_file(path)
    cfg, raw = data["cfg"], data["model"]
    patch_size = int(cfg.get("input_patch_size", 16))
    try:
        frames = frames_for_window(window_seconds, max(patch_size, 1))
    except ValueError as error:
        raise CheckpointError(f"{where}: {error}") from error
    config = encoder_config(cfg, raw, frames, where)
    state = _fold_pos_conv(raw, where)
    _check_shared_tables(state, where)
    expected = module_shapes(BeatsEncoder, config)
    converted = convert_state_dict(state, expected, _RULES, where=where, ignore=_SHARED_TABLE.pattern)
    return BeatsCheckpoint(
        fbank=beats_fbank(frames),
        encoder=config,
        state_dict=converted,
        labels=read_labels(data.get("label_dict"), config.num_classes, where),
        weights_path=path,
    )
