"""Helpers of the model tests: real clips at 16 kHz, unit-scale random weights, tiny AST configs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from tests.models import variant_references

SAMPLE_RATE = 16000
# Lengths at 16 kHz: 15.7 s (cut to 10.24 s), 2.8 s, 2.0 s, 0.8 s, and 1 s of digital silence.
CLIPS = ("speech_spanish_16s.ogg", "music_piano.flac", "bird_crow.ogg", "speech_french.ogg", "silence_1s.wav")


def read_clip(path: Path) -> np.ndarray:
    """Mono float32 at 16 kHz, the way the service decodes (variant_references.read_clip)."""
    return variant_references.read_clip(path, SAMPLE_RATE)


def window_batch(waves: list[np.ndarray], window_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Clips cut or zero-padded to one window, and their real sample counts: what the engine sends."""
    batch = np.zeros((len(waves), window_samples), dtype=np.float32)
    counts = []
    for row, wave in enumerate(waves):
        count = min(len(wave), window_samples)
        batch[row, :count] = wave[:count]
        counts.append(count)
    return torch.from_numpy(batch), torch.tensor(counts, dtype=torch.int64)


def randomise_unit_scale(model: torch.nn.Module, seed: int) -> None:
    """Weights at unit scale (as ../shared/golden does), not transformers' init, which zeroes the
    tokens and position table and would hide a wrong token order or position mapping."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if name.endswith("bias"):
                param.copy_(0.1 * noise)
            elif param.ndim == 1:  # LayerNorm weights
                param.copy_(1.0 + 0.3 * noise)
            elif "token" in name or "position" in name:
                param.copy_(0.5 * noise)
            else:  # Linear and Conv2d weights: N(0, 1 / fan_in)
                param.copy_(noise / math.sqrt(param[0].numel()))


TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)
# Not AST's defaults: other strides, frame count and mel bins (5 x 36 patches).
NON_DEFAULT = dict(frequency_stride=12, time_stride=8, max_length=300, num_mel_bins=64)


def original_ast_state_dict(hf_model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The same weights in the original AST .pth layout, as DataParallel saves it (`module.` prefix),
    with timm's unused ImageNet heads. Written from AST's source, independently of our converter."""
    hf = {key: value.detach().clone() for key, value in hf_model.state_dict().items()}
    prefix = "audio_spectrogram_transformer."
    embeddings = prefix + "embeddings."
    out = {
        "v.cls_token": hf[embeddings + "cls_token"],
        "v.dist_token": hf[embeddings + "distillation_token"],
        "v.pos_embed": hf[embeddings + "position_embeddings"],
        "v.patch_embed.proj.weight": hf[embeddings + "patch_embeddings.projection.weight"],
        "v.patch_embed.proj.bias": hf[embeddings + "patch_embeddings.projection.bias"],
        "v.norm.weight": hf[prefix + "layernorm.weight"],
        "v.norm.bias": hf[prefix + "layernorm.bias"],
        "mlp_head.0.weight": hf["classifier.layernorm.weight"],
        "mlp_head.0.bias": hf["classifier.layernorm.bias"],
        "mlp_head.1.weight": hf["classifier.dense.weight"],
        "mlp_head.1.bias": hf["classifier.dense.bias"],
    }
    dim = out["v.cls_token"].shape[-1]
    out["v.head.weight"] = torch.randn(1000, dim)
    out["v.head.bias"] = torch.randn(1000)
    out["v.head_dist.weight"] = torch.randn(1000, dim)
    out["v.head_dist.bias"] = torch.randn(1000)
    for index in range(hf_model.config.num_hidden_layers):
        layer = f"{prefix}layers.{index}."  # transformers >= 5 names in memory
        block = f"v.blocks.{index}."
        for part in ("weight", "bias"):
            out[block + f"norm1.{part}"] = hf[layer + f"layernorm_before.{part}"]
            out[block + f"norm2.{part}"] = hf[layer + f"layernorm_after.{part}"]
            out[block + f"attn.qkv.{part}"] = torch.cat(
                [hf[layer + f"attention.{name}_proj.{part}"] for name in ("q", "k", "v")]
            )
            out[block + f"attn.proj.{part}"] = hf[layer + f"attention.o_proj.{part}"]
            out[block + f"mlp.fc1.{part}"] = hf[layer + f"mlp.fc1.{part}"]
            out[block + f"mlp.fc2.{part}"] = hf[layer + f"mlp.fc2.{part}"]
    return {"module." + key: value for key, value in out.items()}
