"""BEATs' frozen configuration and its frontend preset.

Field names follow our style; the comments name the field of BEATs' own `BEATsConfig` (the
"cfg" dict inside every released .pt) each one comes from.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from earshot_models.config import FLOAT32_EPS, FRAME_LENGTH, FRAME_SHIFT, SAMPLE_RATE, FbankConfig

BEATS_FBANK_MEAN = 15.41663  # BEATs.preprocess's fbank_mean (AudioSet statistics of its 2**15-scaled fbank)
BEATS_FBANK_STD = 6.55582  # BEATs.preprocess's fbank_std; output = (x - mean) / (2 * std)
BEATS_WAVE_SCALE = 2.0**15  # BEATs.preprocess multiplies the waveform (full scale 1.0) by 2**15
DEFAULT_WINDOW_SECONDS = 10.0  # BEATs was pre-trained and fine-tuned on 10 s AudioSet clips

# torchaudio.compliance.kaldi.fbank with its defaults, as BEATs.preprocess calls it: 25 ms / 10 ms
# frames, povey window, pre-emphasis 0.97, per-frame DC removal, 512-point FFT, 128 mel from 20 Hz
# to Nyquist, log floor float32 eps. `num_frames` is set per bundle (beats_fbank). Frames past a
# short clip's end never reach a token the model attends to (model.py), so `pad_value` only fills
# the first patch of a clip shorter than one patch: log(eps), what an all-zero frame gives.
BEATS_FBANK = FbankConfig(
    sample_rate=SAMPLE_RATE,
    frame_length=FRAME_LENGTH,
    frame_shift=FRAME_SHIFT,
    n_fft=512,
    num_mel_bins=128,
    low_freq=20.0,
    high_freq=0.0,
    window="povey",
    preemphasis=0.97,
    remove_dc=True,
    log_floor=FLOAT32_EPS,
    num_frames=992,  # 10 s: 998 frames, of which the 16-frame patches use 62 * 16
    pad_value=-15.942385152878742,  # log(FLOAT32_EPS)
    norm_mean=BEATS_FBANK_MEAN,
    norm_std=BEATS_FBANK_STD,
    wave_scale=BEATS_WAVE_SCALE,
)


@dataclass(frozen=True)
class BeatsConfig:
    """BEATs' encoder. The input is the fbank (time, mel) of `BEATS_FBANK`, `input_tdim` frames."""

    patch_size: int  # input_patch_size: square patches, stride = size (no overlap)
    patch_embed_dim: int  # embed_dim: patch conv channels (512 in the released models)
    embed_dim: int  # encoder_embed_dim (768); a Linear maps patch_embed_dim to it when they differ
    depth: int  # encoder_layers
    num_heads: int  # encoder_attention_heads
    ffn_dim: int  # encoder_ffn_embed_dim
    conv_pos: int  # conv_pos: kernel of the convolutional position embedding (over the token sequence)
    conv_pos_groups: int  # conv_pos_groups
    relative_position: bool  # relative_position_embedding
    num_buckets: int  # num_buckets of the relative position table (half per direction)
    max_distance: int  # max_distance: relative distances from here on share the last bucket
    gated_relative_position: bool  # gru_rel_pos: a per-query, per-head gate on the relative bias
    deep_norm: bool  # deep_norm: residual scaled by (2 * depth) ** 0.25 before each post-LN
    layer_norm_eps: float  # torch.nn.LayerNorm's default in BEATs (1e-5)
    num_classes: int  # predictor_class of a fine-tuned model; 0: pre-trained (no predictor)
    input_fdim: int = 128  # mel bins
    input_tdim: int = 992  # frames (a multiple of patch_size: extra frames would be dropped)

    @property
    def grid(self) -> tuple[int, int]:
        """(time patches, mel patches)."""
        return self.input_tdim // self.patch_size, self.input_fdim // self.patch_size

    @property
    def num_tokens(self) -> int:
        time_patches, mel_patches = self.grid
        return time_patches * mel_patches

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def deep_norm_alpha(self) -> float:
        return (2.0 * self.depth) ** 0.25 if self.deep_norm else 1.0

    def validate(self) -> None:
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if self.embed_dim % self.conv_pos_groups:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by conv_pos_groups {self.conv_pos_groups}")
        if min(self.grid) <= 0:
            raise ValueError(
                f"input {self.input_tdim} frames x {self.input_fdim} mel is smaller than one "
                f"{self.patch_size}x{self.patch_size} patch"
            )
        if self.relative_position and self.num_buckets < 4:
            raise ValueError(f"num_buckets {self.num_buckets} too small for a bidirectional table")


def frames_for_window(window_seconds: float, patch_size: int, fbank: FbankConfig = BEATS_FBANK) -> int:
    """Frames a window of `window_seconds` gives BEATs, cut to whole patches (what its conv uses)."""
    samples = round(window_seconds * fbank.sample_rate)
    if samples < fbank.frame_length:
        raise ValueError(f"window of {window_seconds} s is shorter than one frame")
    frames = 1 + (samples - fbank.frame_length) // fbank.frame_shift  # Kaldi snip-edges
    usable = frames // patch_size * patch_size
    if usable == 0:
        raise ValueError(f"window of {window_seconds} s is shorter than one {patch_size}-frame patch")
    return usable


def beats_fbank(num_frames: int) -> FbankConfig:
    """The BEATs frontend for `num_frames` frames per window."""
    return replace(BEATS_FBANK, num_frames=num_frames)
