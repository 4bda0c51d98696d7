"""The frozen configuration of the waveform speech encoders.

Field names follow our style; the comments name the transformers config.json field each one comes
from (the same names in every family). Where a family fixes a switch (data2vec-audio: layer-norm
convs, post-LN layers, stacked position convs), its converter sets it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from earshot_models.config import SAMPLE_RATE

FAMILIES = ("wav2vec2", "hubert", "data2vec-audio", "unispeech-sat", "wavlm")  # config.json model_type
CONV_NORMS = ("group", "layer")  # feat_extract_norm
# weight_norm: one grouped conv, weight norm folded (wav2vec 2.0, HuBERT, UniSpeech-SAT, WavLM);
# stacked: `pos_conv_depth` grouped convs, each followed by a parameter-free LayerNorm (data2vec-audio)
POS_CONVS = ("weight_norm", "stacked")
CONV_NORM_EPS = 1e-5  # the conv stack's GroupNorm / LayerNorm and data2vec's position LayerNorms: torch's default
NORMALIZE_EPS = 1e-7  # Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm: (x - mean) / sqrt(var + 1e-7)
HEAD_LAYER_MEAN = "mean"  # SpeechEmbeddingHead: the mean over layers 1..L instead of one layer


@dataclass(frozen=True)
class SpeechEncoderConfig:
    """One waveform speech encoder; lengths in samples at `sample_rate`, widths in channels."""

    family: str  # model_type
    conv_dim: tuple[int, ...]  # conv_dim: output channels of each conv of the feature encoder
    conv_kernel: tuple[int, ...]  # conv_kernel
    conv_stride: tuple[int, ...]  # conv_stride
    conv_bias: bool  # conv_bias
    conv_norm: str  # feat_extract_norm: "group" (GroupNorm after the first conv only) or "layer" (after every conv)
    projection_norm: bool  # HuBERT's feat_proj_layer_norm; always True elsewhere
    hidden_size: int  # hidden_size
    num_layers: int  # num_hidden_layers
    num_heads: int  # num_attention_heads
    intermediate_size: int  # intermediate_size
    pos_conv: str  # one of POS_CONVS
    pos_conv_kernel: int  # num_conv_pos_embeddings (weight_norm); conv_pos_kernel_size (stacked)
    pos_conv_groups: int  # num_conv_pos_embedding_groups
    pos_conv_depth: int  # stacked: data2vec-audio's num_conv_pos_embeddings (the number of convs); 1 otherwise
    stable_layer_norm: bool  # do_stable_layer_norm: pre-LN layers and a final LayerNorm
    layer_norm_eps: float  # layer_norm_eps: the feature projection's, the encoder's and every layer's LayerNorm
    relative_position: bool  # WavLM: gated relative position bias
    num_buckets: int = 320  # WavLM's num_buckets (half per direction)
    max_distance: int = 800  # WavLM's max_bucket_distance: distances from here on share the last bucket
    normalize: bool = False  # the feature extractor's do_normalize (preprocessor_config.json)
    sample_rate: int = SAMPLE_RATE  # Hz; every released checkpoint of these families is 16 kHz

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def hop_samples(self) -> int:
        """Samples between frames: the product of the conv strides (320, 20 ms, for the released models)."""
        return math.prod(self.conv_stride)

    @property
    def receptive_field(self) -> int:
        """Samples one frame sees (400, 25 ms, for the released models)."""
        field = 1
        for kernel, stride in zip(reversed(self.conv_kernel), reversed(self.conv_stride), strict=True):
            field = (field - 1) * stride + kernel
        return field

    def num_frames(self, num_samples: int) -> int:
        """Frames the conv stack gives for `num_samples` samples (no padding: floor((n - k) / s) + 1 per conv)."""
        length = num_samples
        for kernel, stride in zip(self.conv_kernel, self.conv_stride, strict=True):
            length = (length - kernel) // stride + 1
        return length

    def validate(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"family {self.family!r} is not one of {FAMILIES}")
        if not len(self.conv_dim) == len(self.conv_kernel) == len(self.conv_stride) > 0:
            raise ValueError(
                f"conv_dim, conv_kernel and conv_stride must have one entry per conv layer; got "
                f"{len(self.conv_dim)}, {len(self.conv_kernel)}, {len(self.conv_stride)}"
            )
        if min(self.conv_kernel) < 1 or min(self.conv_stride) < 1 or min(self.conv_dim) < 1:
            raise ValueError("conv_dim, conv_kernel and conv_stride must be positive")
        if self.conv_norm not in CONV_NORMS:
            raise ValueError(f"feat_extract_norm {self.conv_norm!r} is not one of {CONV_NORMS}")
        if self.pos_conv not in POS_CONVS:
            raise ValueError(f"pos_conv {self.pos_conv!r} is not one of {POS_CONVS}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_attention_heads {self.num_heads}")
        if self.hidden_size % self.pos_conv_groups:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by num_conv_pos_embedding_groups {self.pos_conv_groups}"
            )
        if self.pos_conv_kernel < 1 or self.pos_conv_depth < 1 or self.num_layers < 1:
            raise ValueError("the position conv's kernel and depth, and the number of layers, must be positive")
        if self.pos_conv == "weight_norm" and self.pos_conv_depth != 1:
            raise ValueError("a weight-norm position conv is one conv (pos_conv_depth 1)")
        if self.relative_position and (self.num_buckets < 4 or self.max_distance <= self.num_buckets // 4):
            raise ValueError(
                f"num_buckets {self.num_buckets} / max_bucket_distance {self.max_distance}: need at least 4 "
                "buckets and a max distance past the exact range (num_buckets / 4)"
            )
