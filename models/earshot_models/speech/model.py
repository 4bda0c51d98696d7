"""Waveform in, hidden states, pooled embedding and frames out, for the waveform speech encoders.

SpeechEncoder:  waveform (B, N) -> WaveformNorm (the feature extractor's do_normalize) -> conv
                feature encoder (B, T, C) -> feature projection (B, T, D) -> transformer
                -> hidden states (L + 1, B, T, D) (encoder.py says what entry i is)
SpeechEmbeddingHead: hidden states -> (embedding (B, D), frames (B, T, D)) of a chosen layer:
                `layer` an int in 0..L (default L, the last), or "mean": frames averaged over
                layers 1..L (so the embedding is the mean of the per-layer frame means)
SpeechEmbeddingModel: the two together, running only the layers the head needs.

Windows are unpadded and of a fixed size (the engine's windows): no attention mask is taken and
every frame is real. A window zero-padded past the clip's end is therefore not the clip alone: the
padding is normalised with the rest, seen by GroupNorm, the position conv and attention, and
averaged into the embedding (what transformers does with attention_mask=None, too).
"""

from __future__ import annotations

import torch
from torch import nn

from earshot_models.speech.config import HEAD_LAYER_MEAN, SpeechEncoderConfig
from earshot_models.speech.encoder import SpeechTransformer
from earshot_models.speech.feature_encoder import ConvFeatureEncoder, FeatureProjection
from earshot_models.speech.normalize import WaveformNorm


class SpeechEncoder(nn.Module):
    def __init__(self, config: SpeechEncoderConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.normalize = WaveformNorm(config.normalize)
        self.feature_encoder = ConvFeatureEncoder(config)
        self.projection = FeatureProjection(
            config.conv_dim[-1], config.hidden_size, config.projection_norm, config.layer_norm_eps
        )
        self.transformer = SpeechTransformer(config)

    def forward_features(self, waveform: torch.Tensor, depth: int | None = None) -> list[torch.Tensor]:
        """waveform (B, N) at config.sample_rate -> hidden states 0..depth (default L), each (B, T, D)."""
        if not torch.jit.is_tracing():
            if waveform.dim() != 2:
                raise ValueError(f"expected a waveform (batch, samples); got shape {tuple(waveform.shape)}")
            if waveform.shape[1] < self.config.receptive_field:
                raise ValueError(
                    f"{waveform.shape[1]} samples is shorter than one frame ({self.config.receptive_field} samples)"
                )
        x = self.feature_encoder(self.normalize(waveform))  # (B, T, C)
        return self.transformer(self.projection(x), depth)  # [(B, T, D)] * (depth + 1)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """waveform (B, N) -> hidden states (L + 1, B, T, D)."""
        return torch.stack(self.forward_features(waveform))


class SpeechEmbeddingHead(nn.Module):
    """hidden states (list of L + 1 (B, T, D), or stacked) -> (embedding (B, D), frames (B, T, D))."""

    def __init__(self, num_layers: int, layer: int | str | None = None):
        super().__init__()
        layer = num_layers if layer is None else layer
        if isinstance(layer, str):
            if layer != HEAD_LAYER_MEAN:
                raise ValueError(f"layer must be an int in 0..{num_layers} or {HEAD_LAYER_MEAN!r}; got {layer!r}")
        elif isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer <= num_layers:
            raise ValueError(f"layer must be an int in 0..{num_layers} or {HEAD_LAYER_MEAN!r}; got {layer!r}")
        self.num_layers = num_layers
        self.layer = layer

    @property
    def depth(self) -> int:
        """The layers the encoder must run for this head."""
        return self.num_layers if isinstance(self.layer, str) else self.layer

    def forward(self, hidden_states: list[torch.Tensor] | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(self.layer, str):  # "mean" over layers 1..L
            layers = [hidden_states[index] for index in range(1, self.num_layers + 1)]
            frames = torch.stack(layers).mean(dim=0)  # (B, T, D)
        else:
            frames = hidden_states[self.layer]  # (B, T, D)
        return frames.mean(dim=1), frames  # (B, D), (B, T, D)


class SpeechEmbeddingModel(nn.Module):
    """forward(waveform (B, N) float32) -> (embedding (B, D), frames (B, T, D)) of the head's layer."""

    def __init__(self, encoder: SpeechEncoder, head: SpeechEmbeddingHead):
        super().__init__()
        if head.num_layers != encoder.config.num_layers:
            raise ValueError(f"the head is for {head.num_layers} layers, the encoder has {encoder.config.num_layers}")
        self.encoder = encoder
        self.head = head

    def forward(self, waveform: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.encoder.forward_features(waveform, self.head.depth))
