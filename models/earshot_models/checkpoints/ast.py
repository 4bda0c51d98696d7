"""AST checkpoints -> our ASTEncoder: two small explicit converters, then load_state_dict(strict=True).

(a) Hugging Face `transformers` (ASTForAudioClassification or ASTModel): a `save_pretrained`
    directory (config.json + model.safetensors, sharded safetensors, or pytorch_model.bin), or a hub
    id, fetched with huggingface_hub for users with internet. The saved layout is the legacy one
    (`encoder.layer.N.attention.attention.{query,key,value}`, `intermediate.dense`, `output.dense`,
    ...); transformers >= 5's in-memory layout (`layers.N.attention.{q,k,v}_proj`, `mlp.fc1`, ...)
    is read too. q, k and v are concatenated (in that order, along the output dim) into our fused
    qkv; nothing is transposed (both sides are nn.Linear / nn.Conv2d weights).
    Geometry, widths and LayerNorm eps come from config.json; labels from its id2label
    (`LABEL_<i>` where it has none, as transformers names them); the frontend's frame count, mel
    bins, mean and std from preprocessor_config.json where the directory has one, else AST's
    AudioSet values (what ASTFeatureExtractor defaults to).

(b) The original AST `.pth` (YuanGongND/ast, saved from torch.nn.DataParallel): `module.v.*` (a
    timm DeiT: `cls_token`, `dist_token`, `pos_embed`, `patch_embed.proj`, `blocks.N.{norm1,
    attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}`, `norm`) and `module.mlp_head.{0,1}` (LayerNorm,
    Linear). Keys map one to one. timm's unused ImageNet heads (`v.head.*`, `v.head_dist.*`) are
    dropped. The file records neither the patch strides, the input size nor the number of heads:
    they are arguments (AST's defaults: 10, 10, 128 x 1024, embed_dim / 64 heads), and a position
    table that does not fit them is reported as such. LayerNorm eps are timm's 1e-6 and torch's
    1e-5 (mlp_head). Labels: the .pth carries none; they come from a labels list the caller reads
    from a file; without one the exporter names a 527-class head with AudioSet's display names
    (earshot_export/audioset_labels.csv) and any other head `class_<i>`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from earshot_models.checkpoints.encoder_checkpoint import (
    EncoderCheckpoint,
    checked_labels,
    count_blocks,
    expected_shapes,
    require,
    validated,
)
from earshot_models.checkpoints.hub import hub_snapshot
from earshot_models.checkpoints.io import (
    HF_WEIGHT_FILES,
    CheckpointError,
    read_hf_weights,
    read_json,
    read_torch,
    strip_data_parallel,
)
from earshot_models.checkpoints.mapping import Rule, convert_state_dict
from earshot_models.config import AST_BASE, AST_FBANK, EncoderConfig, FbankConfig, fbank_for_encoder

HF_FORMAT = "hf-transformers-ast"
PTH_FORMAT = "ast-pth"
PTH_KIND = "an original AST checkpoint"  # in errors: "missing key ...; not an original AST checkpoint?"
HF_PREFIX = "audio_spectrogram_transformer."  # ASTForAudioClassification's encoder; ASTModel has none
HUB_PATTERNS = ("config.json", "preprocessor_config.json", "*.safetensors", "model.safetensors.index.json")


@dataclass(frozen=True)
class ASTCheckpoint(EncoderCheckpoint):
    """An EncoderCheckpoint whose frontend is always AST's Kaldi fbank (also named `fbank`)."""

    frontend: FbankConfig

    @property
    def fbank(self) -> FbankConfig:
        return self.frontend


# -- (a) Hugging Face transformers -------------------------------------------------------------------

_HF_EMBEDDINGS = [
    Rule(r"cls_token", (r"{p}embeddings.cls_token",)),
    Rule(r"dist_token", (r"{p}embeddings.distillation_token",)),
    Rule(r"pos_embed\.weight", (r"{p}embeddings.position_embeddings",)),
    Rule(r"patch_embed\.proj\.(weight|bias)", (r"{p}embeddings.patch_embeddings.projection.\1",)),
    Rule(r"norm\.(weight|bias)", (r"{p}layernorm.\1",)),
    Rule(r"head_norm\.(weight|bias)", (r"classifier.layernorm.\1",)),
    Rule(r"head\.(weight|bias)", (r"classifier.dense.\1",)),
]
_HF_LEGACY_BLOCKS = [  # what save_pretrained writes, and what the hub holds
    Rule(r"blocks\.(\d+)\.norm1\.(weight|bias)", (r"{p}encoder.layer.\1.layernorm_before.\2",)),
    Rule(
        r"blocks\.(\d+)\.attn\.qkv\.(weight|bias)",
        tuple(rf"{{p}}encoder.layer.\1.attention.attention.{name}.\2" for name in ("query", "key", "value")),
    ),
    Rule(r"blocks\.(\d+)\.attn\.proj\.(weight|bias)", (r"{p}encoder.layer.\1.attention.output.dense.\2",)),
    Rule(r"blocks\.(\d+)\.norm2\.(weight|bias)", (r"{p}encoder.layer.\1.layernorm_after.\2",)),
    Rule(r"blocks\.(\d+)\.mlp\.fc1\.(weight|bias)", (r"{p}encoder.layer.\1.intermediate.dense.\2",)),
    Rule(r"blocks\.(\d+)\.mlp\.fc2\.(weight|bias)", (r"{p}encoder.layer.\1.output.dense.\2",)),
]
_HF_V5_BLOCKS = [  # transformers >= 5 module names (a state_dict() taken in memory)
    Rule(r"blocks\.(\d+)\.norm1\.(weight|bias)", (r"{p}layers.\1.layernorm_before.\2",)),
    Rule(
        r"blocks\.(\d+)\.attn\.qkv\.(weight|bias)",
        tuple(rf"{{p}}layers.\1.attention.{name}_proj.\2" for name in ("q", "k", "v")),
    ),
    Rule(r"blocks\.(\d+)\.attn\.proj\.(weight|bias)", (r"{p}layers.\1.attention.o_proj.\2",)),
    Rule(r"blocks\.(\d+)\.norm2\.(weight|bias)", (r"{p}layers.\1.layernorm_after.\2",)),
    Rule(r"blocks\.(\d+)\.mlp\.fc1\.(weight|bias)", (r"{p}layers.\1.mlp.fc1.\2",)),
    Rule(r"blocks\.(\d+)\.mlp\.fc2\.(weight|bias)", (r"{p}layers.\1.mlp.fc2.\2",)),
]


def _with_prefix(rules: list[Rule], prefix: str) -> list[Rule]:
    return [Rule(rule.ours, tuple(t.replace("{p}", prefix) for t in rule.theirs)) for rule in rules]


def hf_rules(state: Mapping[str, torch.Tensor]) -> list[Rule]:
    """The rules for this state dict's flavour: with or without the classifier prefix, legacy or v5 names."""
    prefix = HF_PREFIX if any(key.startswith(HF_PREFIX) for key in state) else ""
    if any(key.startswith(f"{prefix}encoder.layer.") for key in state):
        blocks = _HF_LEGACY_BLOCKS
    elif any(key.startswith(f"{prefix}layers.") for key in state):
        blocks = _HF_V5_BLOCKS
    else:
        raise CheckpointError(
            "no AST encoder layers found (expected keys like "
            f"'{HF_PREFIX}encoder.layer.0.attention.attention.query.weight')"
        )
    return _with_prefix(blocks + _HF_EMBEDDINGS, prefix)


def hf_encoder_config(config: Mapping[str, Any], state: Mapping[str, torch.Tensor]) -> EncoderConfig:
    """Our EncoderConfig from a transformers ASTConfig (config.json) and, for the head, the weights."""
    where = "config.json"
    if config.get("model_type") not in (None, "audio-spectrogram-transformer"):
        raise CheckpointError(f"{where}: model_type {config.get('model_type')!r} is not an AST checkpoint")
    if config.get("hidden_act", "gelu") != "gelu":
        raise CheckpointError(f"{where}: hidden_act {config['hidden_act']!r} not supported (only exact 'gelu')")
    patch = config.get("patch_size", 16)
    if isinstance(patch, (list, tuple)):
        if len(set(patch)) != 1:
            raise CheckpointError(f"{where}: non-square patch_size {patch} not supported")
        patch = patch[0]
    has_head = any(key.startswith(HF_PREFIX) or key.startswith("classifier.") for key in state)
    if "classifier.dense.weight" in state:
        num_classes = int(state["classifier.dense.weight"].shape[0])
    elif has_head:
        num_classes = len(config.get("id2label") or {}) or 2  # transformers' default num_labels
    else:
        num_classes = 0  # an ASTModel checkpoint: embeddings only
    eps = float(config.get("layer_norm_eps", 1e-12))
    try:
        encoder = EncoderConfig(
            patch_size=int(patch),
            fstride=int(config.get("frequency_stride", 10)),
            tstride=int(config.get("time_stride", 10)),
            input_fdim=int(config.get("num_mel_bins", 128)),
            input_tdim=int(config.get("max_length", 1024)),
            embed_dim=int(config.get("hidden_size", 768)),
            depth=int(config.get("num_hidden_layers", 12)),
            num_heads=int(config.get("num_attention_heads", 12)),
            mlp_hidden_dim=int(config.get("intermediate_size", 3072)),
            qkv_bias=bool(config.get("qkv_bias", True)),
            layer_norm_eps=eps,
            head_layer_norm_eps=eps,
            num_classes=num_classes,
        )
        encoder.validate()
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{where}: {error}") from error
    return encoder


def hf_fbank_config(preprocessor: Mapping[str, Any] | None, encoder: EncoderConfig) -> FbankConfig:
    """The frontend ASTFeatureExtractor would run for this checkpoint."""
    fbank = fbank_for_encoder(AST_FBANK, encoder)
    if not preprocessor:
        return fbank
    where = "preprocessor_config.json"
    for field, ours in (("num_mel_bins", encoder.input_fdim), ("max_length", encoder.input_tdim)):
        if field in preprocessor and int(preprocessor[field]) != ours:
            raise CheckpointError(f"{where}: {field} {preprocessor[field]} differs from the model's {ours}")
    if preprocessor.get("do_normalize", True):
        mean, std = float(preprocessor.get("mean", fbank.norm_mean)), float(preprocessor.get("std", fbank.norm_std))
    else:
        mean, std = 0.0, 0.5  # (x - 0) / (2 * 0.5) = x
    return replace(
        fbank,
        sample_rate=int(preprocessor.get("sampling_rate", fbank.sample_rate)),
        norm_mean=mean,
        norm_std=std,
    )


def hf_labels(config: Mapping[str, Any], num_classes: int) -> list[str]:
    id2label = config.get("id2label") or {}
    try:
        labels = {int(index): str(label) for index, label in id2label.items()}
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"config.json: id2label keys must be integers: {error}") from error
    if labels and sorted(labels) == list(range(num_classes)):
        return [labels[index] for index in range(num_classes)]
    return [f"LABEL_{index}" for index in range(num_classes)]


def fetch_hub(repo_id: str) -> Path:
    """A hub checkpoint's config and weights in the local Hugging Face cache (needs internet the first time)."""
    directory = hub_snapshot(repo_id, HUB_PATTERNS)
    if not any((directory / name).is_file() for name in HF_WEIGHT_FILES[:2]):
        directory = hub_snapshot(repo_id, ["pytorch_model.bin"])
    return directory


def read_hf_checkpoint(reference: str | Path) -> ASTCheckpoint:
    """A transformers AST checkpoint: a save_pretrained directory, or a hub id (fetched)."""
    directory = Path(reference)
    if not directory.exists():
        directory = fetch_hub(str(reference))
    if not directory.is_dir():
        raise CheckpointError(f"{reference}: expected a save_pretrained directory (config.json + weights)")
    if not (directory / "config.json").is_file():
        raise CheckpointError(f"{directory}: no config.json; not a transformers save_pretrained directory")
    config = read_json(directory / "config.json")
    preprocessor_file = directory / "preprocessor_config.json"
    preprocessor = read_json(preprocessor_file) if preprocessor_file.is_file() else None
    state, weights_path = read_hf_weights(directory)
    encoder = hf_encoder_config(config, state)
    converted = convert_state_dict(state, expected_shapes(encoder), hf_rules(state), where=str(weights_path))
    return ASTCheckpoint(
        frontend=hf_fbank_config(preprocessor, encoder),
        encoder=encoder,
        state_dict=converted,
        labels=hf_labels(config, encoder.num_classes),
        weights_path=weights_path,
        format=HF_FORMAT,
    )


# -- (b) original AST .pth ---------------------------------------------------------------------------

PTH_RULES = [  # also SSAST's: its fine-tuned files have this layout
    Rule(r"cls_token", (r"v.cls_token",)),
    Rule(r"dist_token", (r"v.dist_token",)),
    Rule(r"pos_embed\.weight", (r"v.pos_embed",)),
    Rule(r"(patch_embed\.proj|blocks\.\d+\.[\w.]+|norm)\.(weight|bias)", (r"v.\1.\2",)),
    Rule(r"head_norm\.(weight|bias)", (r"mlp_head.0.\1",)),
    Rule(r"head\.(weight|bias)", (r"mlp_head.1.\1",)),
]
PTH_IGNORED = r"v\.(head|head_dist)\.(weight|bias)"  # timm's ImageNet heads: in the file, never used


def pth_encoder_config(
    state: Mapping[str, torch.Tensor],
    where: str,
    fstride: int,
    tstride: int,
    input_fdim: int,
    input_tdim: int,
    num_heads: int | None,
) -> EncoderConfig:
    """Our EncoderConfig from the tensor shapes of an AST .pth (module. prefix already removed)."""
    embed_dim = int(require(state, "v.cls_token", where, PTH_KIND).shape[-1])
    proj = require(state, "v.patch_embed.proj.weight", where, PTH_KIND)  # (D, 1, p, p)
    if proj.ndim != 4 or proj.shape[2] != proj.shape[3]:
        raise CheckpointError(
            f"{where}: key 'v.patch_embed.proj.weight' has shape {list(proj.shape)}, expected [D, 1, p, p]"
        )
    depth = count_blocks(state, "v.")
    fc1 = require(state, "v.blocks.0.mlp.fc1.weight", where, PTH_KIND)  # (hidden, D)
    if num_heads is None:
        if embed_dim % 64:
            raise CheckpointError(f"{where}: width {embed_dim} is not a multiple of 64; pass num_heads")
        num_heads = embed_dim // 64
    head = state.get("mlp_head.1.weight")
    config = replace(
        AST_BASE,
        patch_size=int(proj.shape[2]),
        fstride=fstride,
        tstride=tstride,
        input_fdim=input_fdim,
        input_tdim=input_tdim,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        mlp_hidden_dim=int(fc1.shape[0]),
        qkv_bias="v.blocks.0.attn.qkv.bias" in state,
        num_classes=int(head.shape[0]) if head is not None else 0,
    )
    validated(config, where)
    positions = int(require(state, "v.pos_embed", where, PTH_KIND).shape[1])
    if positions != config.num_prefix + config.num_patches:
        f_dim, t_dim = config.grid
        raise CheckpointError(
            f"{where}: key 'v.pos_embed' has {positions} positions, but fstride={fstride}, tstride={tstride} "
            f"over {input_fdim} mel x {input_tdim} frames make 2 + {f_dim} x {t_dim} = "
            f"{config.num_prefix + config.num_patches}; pass the strides and frame count the model was trained with"
        )
    return config


def read_ast_pth(
    path: str | Path,
    fstride: int = AST_BASE.fstride,
    tstride: int = AST_BASE.tstride,
    input_fdim: int = AST_BASE.input_fdim,
    input_tdim: int = AST_BASE.input_tdim,
    num_heads: int | None = None,
    labels: list[str] | None = None,
    norm_mean: float = AST_FBANK.norm_mean,
    norm_std: float = AST_FBANK.norm_std,
) -> ASTCheckpoint:
    """An original AST .pth. num_heads None means embed_dim // 64 (12 for AST base);
    norm_mean / norm_std are the dataset statistics the model was trained with (AudioSet's by default)."""
    path = Path(path)
    where = str(path)
    state = strip_data_parallel(read_torch(path))
    encoder = pth_encoder_config(state, where, fstride, tstride, input_fdim, input_tdim, num_heads)
    converted = convert_state_dict(state, expected_shapes(encoder), PTH_RULES, where=where, ignore=PTH_IGNORED)
    fbank = replace(fbank_for_encoder(AST_FBANK, encoder), norm_mean=norm_mean, norm_std=norm_std)
    return ASTCheckpoint(
        frontend=fbank,
        encoder=encoder,
        state_dict=converted,
        labels=checked_labels(labels, encoder.num_classes, where),
        weights_path=path,
        format=PTH_FORMAT,
    )
