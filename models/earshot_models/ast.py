"""Audio Spectrogram Transformer (Gong et al., 2021): a DeiT over overlapping fbank patches.

fbank (B, T, F) -> image (B, 1, F, T) (mel is the height) -> 16x16 patches at (fstride, tstride)
-> tokens, mel-major (index f * T' + t) -> [cls, dist, patches] + learned positions
-> pre-LN blocks -> norm -> embedding = (cls + dist) / 2 -> logits = Linear(LayerNorm(embedding)).

The same encoder, switched by EncoderConfig, is also (see ../shared/golden/README.md):
- SSAST (ft_avgtok): AST's layout; embedding = mean of the patch tokens after the norm.
- PaSST: separate frequency / time position tables (the time table cut to the input's length),
  the prefix tokens with their own rows; otherwise AST's layout, head LayerNorm eps 1e-5.
- Audio-MAE: image (B, 1, T, F) (time is the height) -> time-major tokens (t * F' + f); cls only;
  no final norm; embedding = fc_norm(mean of the patch tokens); logits = Linear(embedding).
"""

from __future__ import annotations

import torch
from torch import nn

from earshot_models.config import EncoderConfig
from earshot_models.layers.block import Block
from earshot_models.layers.patch_embed import PatchEmbed
from earshot_models.layers.pos_embed import FreqTimePositionEmbedding, LearnedPositionEmbedding


class ASTEncoder(nn.Module):
    def __init__(self, config: EncoderConfig):
        super().__init__()
        config.validate()
        self.config = config
        dim = config.embed_dim
        self.patch_embed = PatchEmbed(1, dim, config.patch_size, stride=config.patch_stride)
        if "cls" in config.prefix_tokens:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        if "dist" in config.prefix_tokens:
            self.dist_token = nn.Parameter(torch.zeros(1, 1, dim))
        if config.pos_embed == "freq_time":
            f_dim, t_dim = config.grid
            self.pos_embed = FreqTimePositionEmbedding(config.num_prefix, f_dim, config.time_table_patches, t_dim, dim)
        else:
            self.pos_embed = LearnedPositionEmbedding(config.num_prefix + config.num_patches, dim)
        self.blocks = nn.ModuleList(
            Block(dim, config.num_heads, config.mlp_hidden_dim, config.qkv_bias, config.layer_norm_eps)
            for _ in range(config.depth)
        )
        self.norm = nn.LayerNorm(dim, eps=config.layer_norm_eps) if config.final_norm else nn.Identity()
        if config.fc_norm:
            self.fc_norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        if config.num_classes > 0:
            if config.head_norm:
                self.head_norm = nn.LayerNorm(dim, eps=config.head_layer_norm_eps)
            self.head = nn.Linear(dim, config.num_classes)

    def forward_features(self, fbank: torch.Tensor) -> torch.Tensor:
        """fbank (B, T, F) normalised log-mel -> tokens (B, prefix + F' * T', D) after the final norm."""
        config = self.config
        if not torch.jit.is_tracing() and tuple(fbank.shape[1:]) != (config.input_tdim, config.input_fdim):
            raise ValueError(
                f"expected fbank (batch, {config.input_tdim}, {config.input_fdim}); got {tuple(fbank.shape)}"
            )
        if config.patch_order == "mel_major":
            image = fbank.transpose(1, 2).unsqueeze(1)  # (B, 1, F, T): mel is the height -> mel-major tokens
        else:
            image = fbank.unsqueeze(1)  # (B, 1, T, F): time is the height -> time-major tokens
        x = self.patch_embed(image)  # (B, F' * T', D)
        batch = x.shape[0]
        prefix = [getattr(self, f"{name}_token").expand(batch, -1, -1) for name in config.prefix_tokens]  # (B, 1, D)
        x = torch.cat([*prefix, x], dim=1)  # (B, prefix + F' * T', D)
        x = self.pos_embed(x)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)  # (B, prefix + F' * T', D)

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, N, D) -> clip embedding (B, D)."""
        pooling = self.config.pooling
        if pooling == "cls_dist_mean":
            return (tokens[:, 0] + tokens[:, 1]) / 2  # (B, D)
        if pooling == "cls":
            return tokens[:, 0]  # (B, D)
        return tokens[:, self.config.num_prefix :].mean(dim=1)  # "mean_patch": (B, D)

    def forward_head(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """tokens (B, N, D) -> (embedding (B, D), logits (B, C) or None without a head)."""
        config = self.config
        embedding = self.pool(tokens)  # (B, D)
        if config.fc_norm:
            embedding = self.fc_norm(embedding)
        if config.num_classes == 0:
            return embedding, None
        return embedding, self.head(self.head_norm(embedding) if config.head_norm else embedding)

    def forward(self, fbank: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.forward_head(self.forward_features(fbank))
