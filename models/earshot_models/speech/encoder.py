"""The transformer of the speech encoders: projected features (B, T, D) -> hidden states of every layer.

post-LN (base):   x = LayerNorm(x + pos_conv(x)) -> layers; hidden_states = [x, layer 1, ..., layer L]
pre-LN (stable):  x = x + pos_conv(x) -> layers -> LayerNorm; hidden_states = [x, layer 1, ...,
                  LayerNorm(layer L)]: the last entry is the model's output, after the final norm
(transformers >= 5 reports the last layer *before* the final norm in `hidden_states[-1]` and after
it in `last_hidden_state`; here entry L is `last_hidden_state`, as transformers 4 had it. Entries
0..L-1 are transformers' `hidden_states[0..L-1]` in both layouts.)
WavLM: the relative position bias (1, H, T, T) is computed once and given to every layer.
"""

from __future__ import annotations

import torch
from torch import nn

from earshot_models.speech.config import SpeechEncoderConfig
from earshot_models.speech.layer import SpeechLayer
from earshot_models.speech.positional import ConvPositionEmbedding, StackedConvPositionEmbedding
from earshot_models.speech.rel_pos import RelativePositionBias


class SpeechTransformer(nn.Module):
    def __init__(self, config: SpeechEncoderConfig):
        super().__init__()
        self.config = config
        dim = config.hidden_size
        self.pos_conv: nn.Module
        if config.pos_conv == "stacked":
            self.pos_conv = StackedConvPositionEmbedding(
                dim, config.pos_conv_kernel, config.pos_conv_groups, config.pos_conv_depth
            )
        else:
            self.pos_conv = ConvPositionEmbedding(dim, config.pos_conv_kernel, config.pos_conv_groups)
        self.norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)  # before the layers (post-LN) or after (pre-LN)
        if config.relative_position:
            self.rel_pos = RelativePositionBias(config.num_buckets, config.max_distance, config.num_heads)
        self.layers = nn.ModuleList(
            SpeechLayer(
                dim,
                config.num_heads,
                config.intermediate_size,
                config.stable_layer_norm,
                config.relative_position,
                config.layer_norm_eps,
            )
            for _ in range(config.num_layers)
        )

    def forward(self, x: torch.Tensor, depth: int | None = None) -> list[torch.Tensor]:
        """x (B, T, D) projected features -> [hidden state 0, ..., hidden state `depth`], each (B, T, D).

        depth: the layers to run (default all); the pre-LN final norm is applied only when all run.
        """
        num_layers = self.config.num_layers
        depth = num_layers if depth is None else depth
        if not 0 <= depth <= num_layers:
            raise ValueError(f"depth {depth} is not in 0..{num_layers}")
        x = x + self.pos_conv(x)  # (B, T, D)
        if not self.config.stable_layer_norm:
            x = self.norm(x)
        position_bias = self.rel_pos(x.shape[1]) if self.config.relative_position else None  # (1, H, T, T)
        hidden_states = [x]
        for layer in self.layers[:depth]:
            x = layer(x, position_bias)  # (B, T, D)
            hidden_states.append(x)
        if self.config.stable_layer_norm and depth == num_layers:
            hidden_states[-1] = self.norm(x)  # (B, T, D)
        return hidden_states
