"""Helpers of the BEATs tests: the golden files, and random BEATs files in the published layout.

`beats_layout` writes BEATs' own key names and shapes (microsoft/unilm beats/BEATs.py and
backbone.py, as the released .pt files hold them), independently of our converter.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

GOLDEN_SAMPLES = 96000  # 6 s at 16 kHz, the golden `wave`
GOLDEN_FRAMES = 598  # Kaldi frames of 6 s; the 16-frame patches use the first 592 (37 x 8 tokens)
GOLDEN_PATCH_FRAMES = 592

# Not BEATs' defaults in any dimension that matters: no post_extract_proj (patch width = encoder
# width), 3 heads of 16, an odd position-conv kernel, a plain (ungated) relative bias with a small
# table, no deep norm, 5 classes.
NON_DEFAULT_CFG = {
    "input_patch_size": 16,
    "embed_dim": 48,
    "conv_bias": False,
    "encoder_layers": 3,
    "encoder_embed_dim": 48,
    "encoder_ffn_embed_dim": 80,
    "encoder_attention_heads": 3,
    "activation_fn": "gelu",
    "layer_norm_first": False,
    "deep_norm": False,
    "dropout": 0.1,
    "attention_dropout": 0.1,
    "conv_pos": 15,
    "conv_pos_groups": 4,
    "relative_position_embedding": True,
    "num_buckets": 64,
    "max_distance": 100,
    "gru_rel_pos": False,
    "finetuned_model": True,
    "predictor_dropout": 0.1,
    "predictor_class": 5,
}


def golden_paths(golden_dir: Path) -> dict[str, Path]:
    folder = golden_dir / "beats"
    return {
        "pretrained": folder / "beats-tiny-a-pretrained.pt",
        "finetuned": folder / "beats-tiny-a-finetuned.pt",
        "npz": folder / "beats-tiny-a-golden.npz",
    }


def load_golden(golden_dir: Path) -> dict[str, np.ndarray]:
    with np.load(golden_paths(golden_dir)["npz"]) as data:
        return {key: data[key] for key in data.files}


def beats_layout(cfg: dict, seed: int) -> dict[str, torch.Tensor]:
    """A random state dict with BEATs' keys for `cfg`, at unit scale (matrices N(0, 1/fan_in), norm
    weights 1 + N(0, 0.3), biases N(0, 0.1)); the position conv in weight-norm form (g, v)."""
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=generator)

    def matrix(*shape: int) -> torch.Tensor:
        return randn(*shape) / math.sqrt(math.prod(shape[1:]))

    def norm(prefix: str, dim: int) -> dict[str, torch.Tensor]:
        return {f"{prefix}.weight": 1.0 + 0.3 * randn(dim), f"{prefix}.bias": 0.1 * randn(dim)}

    def linear(prefix: str, out: int, inp: int) -> dict[str, torch.Tensor]:
        return {f"{prefix}.weight": matrix(out, inp), f"{prefix}.bias": 0.1 * randn(out)}

    patch, embed, dim = cfg["input_patch_size"], cfg["embed_dim"], cfg["encoder_embed_dim"]
    heads, ffn, kernel = cfg["encoder_attention_heads"], cfg["encoder_ffn_embed_dim"], cfg["conv_pos"]
    state = {"patch_embedding.weight": matrix(embed, 1, patch, patch), **norm("layer_norm", embed)}
    if embed != dim:
        state.update(linear("post_extract_proj", dim, embed))
    state["encoder.pos_conv.0.bias"] = 0.1 * randn(dim)
    state["encoder.pos_conv.0.weight_g"] = 0.5 + randn(1, 1, kernel).abs()  # weight_norm(dim=2): one g per tap
    state["encoder.pos_conv.0.weight_v"] = randn(dim, dim // cfg["conv_pos_groups"], kernel)
    table = 0.5 * randn(cfg["num_buckets"], heads)
    for index in range(cfg["encoder_layers"]):
        layer = f"encoder.layers.{index}."
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            state.update(linear(f"{layer}self_attn.{name}", dim, dim))
        if cfg["relative_position_embedding"]:
            state[f"{layer}self_attn.relative_attention_bias.weight"] = table.clone()  # shared, saved per layer
        if cfg["gru_rel_pos"]:
            state.update(linear(f"{layer}self_attn.grep_linear", 8, dim // heads))
            state[f"{layer}self_attn.grep_a"] = 1.0 + 0.3 * randn(1, heads, 1, 1)
        state.update(norm(f"{layer}self_attn_layer_norm", dim))
        state.update(linear(f"{layer}fc1", ffn, dim))
        state.update(linear(f"{layer}fc2", dim, ffn))
        state.update(norm(f"{layer}final_layer_norm", dim))
    state.update(norm("encoder.layer_norm", dim))
    if cfg["finetuned_model"]:
        state.update(linear("predictor", cfg["predictor_class"], dim))
    return state


def write_beats_file(path: Path, cfg: dict, seed: int = 0, state: dict | None = None) -> Path:
    data = {"cfg": dict(cfg), "model": state if state is not None else beats_layout(cfg, seed)}
    if cfg["finetuned_model"]:
        data["label_dict"] = {index: f"/m/{index:05d}" for index in range(cfg["predictor_class"])}
    torch.save(data, path)
    return path
