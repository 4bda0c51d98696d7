"""EAT, the Efficient Audio Transformer (Chen et al., 2024; github.com/cwx-worst-one/EAT), fine-tuned.

A data2vec 2.0 image encoder over the Kaldi fbank, as EAT's fine-tuning builds it
(`MaeImageClassificationModel` around `Data2VecMultiModel`, see tests/models/data/eat/README.md):

fbank (B, T, F) -> image (B, 1, T, F) (time is the height) -> 16x16 patches, stride 16 -> tokens,
time-major (index t * F' + f) -> + the fixed 2-D sin-cos table (loaded from the file, its first
T' * F' rows: patch tokens only) -> [cls, patches] (the cls token gets no position) -> LayerNorm
(the context encoder's norm) -> post-LN blocks (x = norm1(x + attn(x)); x = norm2(x + mlp(x))) ->
no final norm -> embedding = fc_norm(cls token) (or of the mean of the patch tokens, MEAN_POOLING)
-> logits = Linear(embedding).

It differs from ASTEncoder's variants (ast.py) in the block (post-LN, not pre-LN), the LayerNorm
in front of the blocks and the cls token without a position row: a module of its own, on the same
layers (PatchEmbed, Attention, Mlp).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from earshot_models.layers.patch_embed import PatchEmbed
from earshot_models.layers.post_norm_block import PostNormBlock

EAT_POOLINGS = ("cls", "mean_patch")  # PredictionMode.CLS_TOKEN, PredictionMode.MEAN_POOLING


@dataclass(frozen=True)
class EATConfig:
    patch_size: int  # square, non-overlapping patches
    input_fdim: int  # mel bins
    input_tdim: int  # frames (EAT's target_length: the fbank is padded or cut to it)
    embed_dim: int
    depth: int
    num_heads: int
    mlp_hidden_dim: int
    qkv_bias: bool
    layer_norm_eps: float  # every LayerNorm (data2vec's norm_eps; fc_norm is 1e-6 in the reference)
    num_classes: int  # 0: no tagging head (embedding only)
    pooling: str = "cls"  # one of EAT_POOLINGS
    fc_norm: bool = True  # use_fc_norm: LayerNorm on the pooled embedding

    @property
    def grid(self) -> tuple[int, int]:
        """(time patches, mel patches)."""
        return self.input_tdim // self.patch_size, self.input_fdim // self.patch_size

    @property
    def num_patches(self) -> int:
        time_patches, mel_patches = self.grid
        return time_patches * mel_patches

    def validate(self) -> None:
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if min(self.grid) <= 0:
            raise ValueError(
                f"input {self.input_tdim} frames x {self.input_fdim} mel is smaller than one "
                f"{self.patch_size}x{self.patch_size} patch"
            )
        if self.pooling not in EAT_POOLINGS:
            raise ValueError(f"pooling {self.pooling!r} not one of {EAT_POOLINGS}")


class EATEncoder(nn.Module):
    def __init__(self, config: EATConfig):
        super().__init__()
        config.validate()
        self.config = config
        dim, patch = config.embed_dim, config.patch_size
        self.patch_embed = PatchEmbed(1, dim, patch, stride=(patch, patch))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, config.num_patches, dim))  # patch tokens only
        self.embed_norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.blocks = nn.ModuleList(
            PostNormBlock(dim, config.num_heads, config.mlp_hidden_dim, config.qkv_bias, config.layer_norm_eps)
            for _ in range(config.depth)
        )
        if config.fc_norm:
            self.fc_norm = nn.LayerNorm(dim, eps=1e-6)
        if config.num_classes > 0:
            self.head = nn.Linear(dim, config.num_classes)

    def forward_features(self, fbank: torch.Tensor) -> torch.Tensor:
        """fbank (B, T, F) normalised log-mel -> tokens (B, 1 + T' * F', D) after the last block."""
        config = self.config
        if not torch.jit.is_tracing() and tuple(fbank.shape[1:]) != (config.input_tdim, config.input_fdim):
            raise ValueError(
                f"expected fbank (batch, {config.input_tdim}, {config.input_fdim}); got {tuple(fbank.shape)}"
            )
        x = self.patch_embed(fbank.unsqueeze(1)) + self.pos_embed  # (B, T' * F', D), time-major
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)  # (B, 1 + T' * F', D)
        x = self.embed_norm(x)
        for block in self.blocks:
            x = block(x)
        return x  # (B, 1 + T' * F', D)

    def forward_head(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """tokens (B, N, D) -> (embedding (B, D), logits (B, C) or None without a head)."""
        config = self.config
        embedding = tokens[:, 0] if config.pooling == "cls" else tokens[:, 1:].mean(dim=1)  # (B, D)
        if config.fc_norm:
            embedding = self.fc_norm(embedding)
        if config.num_classes == 0:
            return embedding, None
        return embedding, self.head(embedding)

    def forward(self, fbank: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.forward_head(self.forward_features(fbank))
