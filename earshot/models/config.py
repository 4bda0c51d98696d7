"""Frozen configurations of the frontend and the encoder, and the published presets.

Every constant a model needs lives here, named and with its unit; modules take a config and
nothing else. Checkpoint converters build these from what a checkpoint records (a Hugging Face
config.json, or tensor shapes) and fall back to the presets for what it does not.

The encoder config is written for the ViT-on-spectrogram-patches family (AST, SSAST, PaSST,
Audio-MAE; see ../shared/golden/README.md); only AST's switches are implemented so far, and
`validate` refuses the others by name rather than running them wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

WINDOW_KINDS = ("hanning", "povey", "hamming", "rectangular")
PATCH_ORDERS = ("mel_major",)  # later: "time_major" (Audio-MAE)
POOLINGS = ("cls_dist_mean", "cls", "mean_patch")
POS_EMBEDS = ("learned",)  # learned table added to every token, prefix tokens included (AST, SSAST)
PREFIX_TOKENS = ("cls", "dist")


@dataclass(frozen=True)
class FbankConfig:
    """Kaldi-compatible log-mel filterbank (`compute-fbank-feats`, snip-edges, no dither).

    Lengths are in samples. Output frames are (time, mel), padded or cut to `num_frames`, and
    normalised as (x - norm_mean) / (2 * norm_std).
    """

    sample_rate: int  # Hz
    frame_length: int  # samples per analysis frame
    frame_shift: int  # samples between frame starts
    n_fft: int  # DFT size; the frame is zero-padded to it
    num_mel_bins: int
    low_freq: float  # Hz, lower edge of the first mel triangle
    high_freq: float  # Hz, upper edge of the last one; <= 0 means Nyquist + high_freq (Kaldi)
    window: str  # one of WINDOW_KINDS; "hanning" is Kaldi's symmetric Hann
    preemphasis: float  # y[n] = x[n] - c x[n-1] inside each frame, first sample against itself
    remove_dc: bool  # subtract each frame's mean before pre-emphasis
    log_floor: float  # log(max(mel energy, log_floor))
    num_frames: int  # frames the model takes: fewer are padded, more are cut
    pad_value: float  # log-mel value of padded frames, before normalisation
    norm_mean: float
    norm_std: float  # output = (x - norm_mean) / (2 * norm_std)
    wave_scale: float  # waveform (full scale 1.0) is multiplied by this first (BEATs: 2**15)

    @property
    def num_fft_bins(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def window_samples(self) -> int:
        """Samples that make exactly `num_frames` frames."""
        return (self.num_frames - 1) * self.frame_shift + self.frame_length

    @property
    def hop_samples(self) -> int:
        """Samples between the starts of two back-to-back windows (their frames tile the signal)."""
        return self.num_frames * self.frame_shift

    def validate(self) -> None:
        if self.window not in WINDOW_KINDS:
            raise ValueError(f"window {self.window!r} not one of {WINDOW_KINDS}")
        if not 0 < self.frame_length <= self.n_fft:
            raise ValueError(f"frame_length {self.frame_length} must be in (0, n_fft={self.n_fft}]")
        if self.frame_shift <= 0 or self.num_frames <= 0 or self.num_mel_bins <= 0:
            raise ValueError("frame_shift, num_frames and num_mel_bins must be positive")
        if self.norm_std <= 0 or self.log_floor <= 0:
            raise ValueError("norm_std and log_floor must be positive")


@dataclass(frozen=True)
class EncoderConfig:
    """A ViT over spectrogram patches: the input is the fbank (time, mel) of `FbankConfig`."""

    patch_size: int  # square patches, patch_size x patch_size (mel x time)
    fstride: int  # patch stride along mel
    tstride: int  # patch stride along time
    input_fdim: int  # mel bins
    input_tdim: int  # frames
    embed_dim: int
    depth: int
    num_heads: int
    mlp_hidden_dim: int
    qkv_bias: bool
    layer_norm_eps: float  # blocks and the final norm
    head_layer_norm_eps: float  # the LayerNorm in front of the classifier
    num_classes: int  # 0: no tagging head (embedding only)
    prefix_tokens: tuple[str, ...] = ("cls", "dist")
    pos_embed: str = "learned"
    patch_order: str = "mel_major"  # token index f * T' + t, mel is the image height
    final_norm: bool = True
    pooling: str = "cls_dist_mean"  # clip embedding: mean of the cls and dist tokens after the norm

    @property
    def grid(self) -> tuple[int, int]:
        """(mel patches, time patches)."""
        f_dim = (self.input_fdim - self.patch_size) // self.fstride + 1
        t_dim = (self.input_tdim - self.patch_size) // self.tstride + 1
        return f_dim, t_dim

    @property
    def num_patches(self) -> int:
        f_dim, t_dim = self.grid
        return f_dim * t_dim

    @property
    def num_prefix(self) -> int:
        return len(self.prefix_tokens)

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    def validate(self) -> None:
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if min(self.grid) <= 0:
            raise ValueError(
                f"input {self.input_fdim} mel x {self.input_tdim} frames is smaller than one "
                f"{self.patch_size}x{self.patch_size} patch"
            )
        if self.patch_order not in PATCH_ORDERS:
            raise NotImplementedError(f"patch_order {self.patch_order!r}: only {PATCH_ORDERS} so far")
        if self.pos_embed not in POS_EMBEDS:
            raise NotImplementedError(f"pos_embed {self.pos_embed!r}: only {POS_EMBEDS} so far")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling {self.pooling!r} not one of {POOLINGS}")
        if any(token not in PREFIX_TOKENS for token in self.prefix_tokens) or len(set(self.prefix_tokens)) != len(
            self.prefix_tokens
        ):
            raise ValueError(f"prefix_tokens {self.prefix_tokens} must be distinct, from {PREFIX_TOKENS}")
        if self.pooling == "cls_dist_mean" and self.prefix_tokens[:2] != ("cls", "dist"):
            raise ValueError("pooling 'cls_dist_mean' needs prefix_tokens ('cls', 'dist')")
        if self.pooling == "cls" and self.prefix_tokens[:1] != ("cls",):
            raise ValueError("pooling 'cls' needs a leading 'cls' prefix token")


# -- presets ---------------------------------------------------------------------------------------

SAMPLE_RATE = 16000  # Hz
FRAME_LENGTH = 400  # 25 ms at 16 kHz
FRAME_SHIFT = 160  # 10 ms at 16 kHz
AUDIOSET_MEAN = -4.2677393  # AST's AudioSet fbank statistics (its dataloader, and ASTFeatureExtractor)
AUDIOSET_STD = 4.5689974
FLOAT32_EPS = 1.1920928955078125e-07  # Kaldi's log floor: numeric_limits<float>::epsilon()

# The frontend of AST (its dataloader, and transformers' ASTFeatureExtractor): torchaudio's Kaldi
# fbank with a symmetric Hann window, 128 mel from 20 Hz to Nyquist, on the waveform at full scale
# 1.0 (no 2**15), zero log-mel padding to 1024 frames (10.24 s).
AST_FBANK = FbankConfig(
    sample_rate=SAMPLE_RATE,
    frame_length=FRAME_LENGTH,
    frame_shift=FRAME_SHIFT,
    n_fft=512,
    num_mel_bins=128,
    low_freq=20.0,
    high_freq=0.0,
    window="hanning",
    preemphasis=0.97,
    remove_dc=True,
    log_floor=FLOAT32_EPS,
    num_frames=1024,
    pad_value=0.0,
    norm_mean=AUDIOSET_MEAN,
    norm_std=AUDIOSET_STD,
    wave_scale=1.0,
)

# AST base (DeiT-B/16 distilled, 384): 16x16 patches at stride 10 over 128 x 1024 -> 12 x 101.
# Original .pth files use timm's LayerNorm eps 1e-6 in the ViT and torch's 1e-5 in mlp_head;
# transformers' port uses 1e-12 in both (its config.json says so, and the loader reads it).
AST_BASE = EncoderConfig(
    patch_size=16,
    fstride=10,
    tstride=10,
    input_fdim=128,
    input_tdim=1024,
    embed_dim=768,
    depth=12,
    num_heads=12,
    mlp_hidden_dim=3072,
    qkv_bias=True,
    layer_norm_eps=1e-6,
    head_layer_norm_eps=1e-5,
    num_classes=527,
)


def fbank_for_encoder(fbank: FbankConfig, encoder: EncoderConfig) -> FbankConfig:
    """The frontend config whose output is the encoder's input size."""
    return replace(fbank, num_frames=encoder.input_tdim, num_mel_bins=encoder.input_fdim)
