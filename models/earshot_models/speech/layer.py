"""One transformer layer of the speech encoders: post-LN ("base") or pre-LN ("stable layer norm").

post-LN (do_stable_layer_norm=False): x = norm1(x + attn(x)); x = norm2(x + mlp(x))
pre-LN  (do_stable_layer_norm=True):  x = x + attn(norm1(x)); x = x + mlp(norm2(x))
norm1 / norm2 are transformers' `layer_norm` / `final_layer_norm`; mlp is Linear, exact GELU,
Linear (`feed_forward.intermediate_dense`, `output_dense`). WavLM's attention takes the relative
position bias; the others' take none.
"""

from __future__ import annotations

import torch
from torch import nn

from earshot_models.layers.attention import Attention
from earshot_models.layers.mlp import Mlp
from earshot_models.speech.attention import GatedRelPosAttention


class SpeechLayer(nn.Module):
    def __init__(
        self, dim: int, num_heads: int, ffn_dim: int, stable_layer_norm: bool, relative_position: bool, eps: float
    ):
        super().__init__()
        self.stable_layer_norm = stable_layer_norm
        self.relative_position = relative_position
        self.attn: nn.Module = GatedRelPosAttention(dim, num_heads) if relative_position else Attention(dim, num_heads, True)
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, ffn_dim)
        self.norm2 = nn.LayerNorm(dim, eps=eps)

    def _attend(self, x: torch.Tensor, position_bias: torch.Tensor | None) -> torch.Tensor:
        if self.relative_position:
            if position_bias is None:
                raise ValueError("a relative-position layer needs the position bias")
            return self.attn(x, position_bias)
        return self.attn(x)

    def forward(self, x: torch.Tensor, position_bias: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, D), position_bias (1, H, T, T) for WavLM, else None -> (B, T, D)."""
        if self.stable_layer_norm:
            x = self._attend(self.norm1(x), position_bias) + x  # (B, T, D)
            return self.mlp(self.norm2(x)) + x  # (B, T, D)
        x = self.norm1(self._attend(x, position_bias) + x)  # (B, T, D)
        return self.norm2(self.mlp(x) + x)  # (B, T, D)
