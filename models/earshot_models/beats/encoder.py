"""BEATs' encoder: fbank (B, T, F) -> tokens (B, N, D) -> (embedding (B, D), logits (B, C) | None).

fbank -> image (B, 1, T, F) (time is the height) -> bias-free 16x16 conv, stride 16
-> tokens time-major (index t * F' + f) -> LayerNorm -> Linear to the encoder width
-> padding tokens zeroed -> + GELU(conv over the token sequence) (convolutional position embedding)
-> LayerNorm -> post-LN layers with the gated relative position bias
-> embedding = mean of the real tokens; logits = predictor(embedding) for a fine-tuned model
(the mean of per-token predictor logits, as the reference computes it: the predictor is linear).
"""

from __future__ import annotations

import torch
from torch import nn

from earshot_models.beats.config import BeatsConfig
from earshot_models.beats.layer import BeatsLayer
from earshot_models.beats.rel_pos import RelativePositionBias


class ConvPositionEmbedding(nn.Module):
    """tokens (B, N, D) -> GELU(grouped Conv1d over the sequence) (B, N, D), 'same' length.

    The reference wraps the conv in weight norm; the converter folds it (weight = g * v / ||v||),
    so here it is a plain conv. An even kernel with padding k // 2 gives N + 1 outputs: the last
    is dropped (the reference's SamePad).
    """

    def __init__(self, dim: int, kernel_size: int, groups: int):
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, kernel_size=kernel_size, padding=kernel_size // 2, groups=groups)
        self.act = nn.GELU(approximate="none")

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        length = tokens.shape[1]
        x = self.conv(tokens.transpose(1, 2))  # (B, D, N + 1) for an even kernel, (B, D, N) for odd
        x = self.act(x[:, :, :length])  # (B, D, N)
        return x.transpose(1, 2)  # (B, N, D)


class BeatsEncoder(nn.Module):
    def __init__(self, config: BeatsConfig):
        super().__init__()
        config.validate()
        self.config = config
        dim = config.embed_dim
        patch = config.patch_size
        self.patch_embed = nn.Conv2d(1, config.patch_embed_dim, kernel_size=patch, stride=patch, bias=False)
        self.patch_norm = nn.LayerNorm(config.patch_embed_dim, eps=config.layer_norm_eps)
        self.proj = nn.Linear(config.patch_embed_dim, dim) if config.patch_embed_dim != dim else nn.Identity()
        self.pos_conv = ConvPositionEmbedding(dim, config.conv_pos, config.conv_pos_groups)
        self.norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        if config.relative_position:
            self.rel_pos = RelativePositionBias(config.num_tokens, config.num_buckets, config.max_distance, config.num_heads)
        self.layers = nn.ModuleList(
            BeatsLayer(
                dim,
                config.num_heads,
                config.ffn_dim,
                config.gated_relative_position,
                config.deep_norm_alpha,
                config.layer_norm_eps,
            )
            for _ in range(config.depth)
        )
        if config.num_classes > 0:
            self.head = nn.Linear(dim, config.num_classes)  # BEATs' predictor

    def forward_features(self, fbank: torch.Tensor, token_real: torch.Tensor | None = None) -> torch.Tensor:
        """fbank (B, T, F) normalised log-mel, token_real (B, N) bool (None: all real) -> tokens (B, N, D)."""
        config = self.config
        if not torch.jit.is_tracing() and tuple(fbank.shape[1:]) != (config.input_tdim, config.input_fdim):
            raise ValueError(
                f"expected fbank (batch, {config.input_tdim}, {config.input_fdim}); got {tuple(fbank.shape)}"
            )
        x = self.patch_embed(fbank.unsqueeze(1))  # (B, E, T', F'): time is the image height
        x = x.flatten(2).transpose(1, 2)  # (B, T' * F', E): time-major tokens
        x = self.proj(self.patch_norm(x))  # (B, N, D)
        if token_real is None:
            token_real = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)  # (B, N)
        x = x * token_real.unsqueeze(-1).to(x.dtype)  # (B, N, D): padding tokens are zeros, as in the reference
        x = self.norm(x + self.pos_conv(x))  # (B, N, D)
        position_bias = self.rel_pos() if config.relative_position else None  # (1, H, N, N)
        zero = torch.zeros((), dtype=x.dtype, device=x.device)
        key_mask = torch.where(token_real, zero, float("-inf"))[:, None, None, :]  # (B, 1, 1, N)
        for layer in self.layers:
            x = layer(x, position_bias, key_mask)
        return x  # (B, N, D)

    def forward_head(
        self, tokens: torch.Tensor, token_real: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """tokens (B, N, D) -> (embedding (B, D): mean of the real tokens, logits (B, C) | None)."""
        if token_real is None:
            embedding = tokens.mean(dim=1)  # (B, D)
        else:
            weight = token_real.unsqueeze(-1).to(tokens.dtype)  # (B, N, 1)
            embedding = (tokens * weight).sum(dim=1) / weight.sum(dim=1)  # (B, D)
        if self.config.num_classes == 0:
            return embedding, None
        return embedding, self.head(embedding)

    def forward(
        self, fbank: torch.Tensor, token_real: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.forward_head(self.forward_features(fbank, token_real), token_real)
