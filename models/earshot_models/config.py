"""Frozen configurations of the frontend and the encoder, and the published presets.

Every constant a model needs lives here, named and with its unit; modules take a config and
nothing else. Checkpoint converters build these from what a checkpoint records (a Hugging Face
config.json, or tensor shapes) and fall back to the presets for what it does not.

The encoder config covers the ViT-on-spectrogram-patches family (AST, SSAST, PaSST, Audio-MAE;
see ../shared/golden/README.md): one encoder, and the places where the four differ are switches
here (patch order, position tables, prefix tokens, pooling, norms, LayerNorm eps).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

WINDOW_KINDS = ("hanning", "povey", "hamming", "rectangular")
# mel_major: mel is the image height, token f * T' + t (AST, SSAST, PaSST);
# time_major: time is the image height, token t * F' + f (Audio-MAE).
PATCH_ORDERS = ("mel_major", "time_major")
POOLINGS = ("cls_dist_mean", "cls", "mean_patch")
# learned: one table (1, prefix + patches, D) added to every token, prefix tokens included (AST, SSAST,
#   and Audio-MAE, whose fixed sin-cos table is loaded from the file like a learned one);
# freq_time: PaSST's separate tables, (1, D, F', 1) per mel row and (1, D, 1, T_table) per time
#   column, the time table cut to the input's T' columns, plus (1, prefix, D) for the prefix tokens.
POS_EMBEDS = ("learned", "freq_time")
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
    # Frames computed from the waveform window; 0 means num_frames. Fewer than num_frames: the
    # window is shorter than the model's input, and the rest is padded with pad_value, as the
    # reference pads a short clip (Audio-MAE and SSAST on 10 s AudioSet clips: 998 real frames of 1024).
    window_frames: int = 0

    @property
    def num_fft_bins(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def computed_frames(self) -> int:
        """Frames computed from the window (the rest, up to num_frames, is padding)."""
        return self.window_frames or self.num_frames

    @property
    def window_samples(self) -> int:
        """Samples that make exactly `computed_frames` frames."""
        return (self.computed_frames - 1) * self.frame_shift + self.frame_length

    @property
    def hop_samples(self) -> int:
        """Samples between the starts of two back-to-back windows (their frames tile the signal)."""
        return self.computed_frames * self.frame_shift

    def validate(self) -> None:
        if self.window not in WINDOW_KINDS:
            raise ValueError(f"window {self.window!r} not one of {WINDOW_KINDS}")
        if not 0 < self.frame_length <= self.n_fft:
            raise ValueError(f"frame_length {self.frame_length} must be in (0, n_fft={self.n_fft}]")
        if self.frame_shift <= 0 or self.num_frames <= 0 or self.num_mel_bins <= 0:
            raise ValueError("frame_shift, num_frames and num_mel_bins must be positive")
        if self.norm_std <= 0 or self.log_floor <= 0:
            raise ValueError("norm_std and log_floor must be positive")
        if not 0 <= self.window_frames <= self.num_frames:
            raise ValueError(f"window_frames {self.window_frames} must be in [0, num_frames={self.num_frames}]")


@dataclass(frozen=True)
class StftMelConfig:
    """PaSST's log-mel (AugmentMelSTFT in eval mode), per window, no mean removal:

    y[n] = x[n+1] - preemphasis * x[n] (valid, N - 1 samples) -> centred STFT (reflect padding of
    n_fft / 2 at each end; a symmetric Hann of win_length centred in the n_fft frame) -> power ->
    Kaldi mel triangles (low_freq..high_freq, zero weight on the Nyquist bin) -> log(mel + log_offset)
    -> (x - norm_mean) / norm_scale. Output (time, mel), as FbankConfig's.
    """

    sample_rate: int  # Hz
    window_samples: int  # the waveform window the graph takes
    preemphasis: float
    n_fft: int
    hop_length: int  # samples between frames
    win_length: int  # samples in the Hann window, <= n_fft
    num_mel_bins: int
    low_freq: float  # Hz
    high_freq: float  # Hz
    log_offset: float
    norm_mean: float
    norm_scale: float  # output = (log(mel + log_offset) - norm_mean) / norm_scale

    @property
    def num_fft_bins(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def num_frames(self) -> int:
        """torch.stft(center=True) frames of the N - 1 pre-emphasised samples."""
        return 1 + (self.window_samples - 1) // self.hop_length

    @property
    def hop_samples(self) -> int:
        """Back-to-back windows: each window is one clip to the reference."""
        return self.window_samples

    def validate(self) -> None:
        if not 0 < self.win_length <= self.n_fft:
            raise ValueError(f"win_length {self.win_length} must be in (0, n_fft={self.n_fft}]")
        if self.hop_length <= 0 or self.num_mel_bins <= 0 or self.norm_scale <= 0 or self.log_offset <= 0:
            raise ValueError("hop_length, num_mel_bins, norm_scale and log_offset must be positive")
        if self.window_samples - 1 <= self.n_fft // 2:
            raise ValueError(
                f"window of {self.window_samples} samples is too short for reflect padding of {self.n_fft // 2}"
            )


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
    pos_embed: str = "learned"  # one of POS_EMBEDS
    patch_order: str = "mel_major"  # token index f * T' + t, mel is the image height; see PATCH_ORDERS
    final_norm: bool = True  # LayerNorm over all tokens after the blocks (Audio-MAE has none)
    pooling: str = "cls_dist_mean"  # clip embedding: mean of the cls and dist tokens after the norm
    fc_norm: bool = False  # LayerNorm (layer_norm_eps) on the pooled embedding (Audio-MAE's fc_norm)
    head_norm: bool = True  # classifier = Linear(LayerNorm(embedding)); False: Linear(embedding)
    pos_embed_time_patches: int = 0  # freq_time: time columns in the table (cut to T'); 0: T'

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
    def patch_stride(self) -> tuple[int, int]:
        """The patch conv's stride over the image (height, width): mel_major (mel, time), time_major (time, mel)."""
        return (self.fstride, self.tstride) if self.patch_order == "mel_major" else (self.tstride, self.fstride)

    @property
    def time_table_patches(self) -> int:
        """freq_time: time columns of the position table."""
        return self.pos_embed_time_patches or self.grid[1]

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
            raise ValueError(f"patch_order {self.patch_order!r} not one of {PATCH_ORDERS}")
        if self.pos_embed not in POS_EMBEDS:
            raise ValueError(f"pos_embed {self.pos_embed!r} not one of {POS_EMBEDS}")
        if self.pos_embed == "freq_time":
            if self.patch_order != "mel_major":
                raise ValueError("pos_embed 'freq_time' is PaSST's, written for patch_order 'mel_major'")
            if self.grid[1] > self.time_table_patches:
                raise ValueError(
                    f"{self.input_tdim} frames make {self.grid[1]} time patches, more than the "
                    f"{self.time_table_patches} columns of the time position table"
                )
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


# SSAST fine-tuned for AudioSet (`ft_avgtok`, SSAST-Base-Patch-400): AST's layout and geometry,
# clip embedding = mean of the patch tokens after the final norm.
# Frontend of SSAST and Audio-MAE: AST_FBANK (both use AST's dataloader). That dataloader first
# subtracts the clip's mean from the waveform; the graph does not, because the fbank subtracts every
# frame's own mean (remove_dc), which removes any constant exactly: the golden fbanks, made with the
# clip mean removed, are reproduced within 1.5e-5 without it.
SSAST_BASE = replace(AST_BASE, pooling="mean_patch")

# Audio-MAE fine-tuned for AudioSet (ViT-B, global_pool): 16x16 non-overlapping patches over
# (time, mel) 1024 x 128 -> 64 x 8, time-major; cls token; the fixed sin-cos table (from the file);
# no final norm; fc_norm(mean of the patch tokens); plain Linear head. Frontend: AST_FBANK.
AUDIOMAE_BASE = replace(
    AST_BASE,
    fstride=16,
    tstride=16,
    head_layer_norm_eps=1e-6,  # unused: no head norm
    prefix_tokens=("cls",),
    patch_order="time_major",
    final_norm=False,
    pooling="mean_patch",
    fc_norm=True,
    head_norm=False,
)

# PaSST-S (passt-s-*.pt): 16x16 patches at stride 10 over 128 mel, built for 998 frames (99 time
# columns in its time position table; a window may use the first T' <= 99 of them);
# (cls + dist) / 2 after the final norm; head LayerNorm eps 1e-5 (torch's), blocks 1e-6 (timm's).
PASST_BASE = replace(
    AST_BASE,
    input_tdim=998,
    pos_embed="freq_time",
    pos_embed_time_patches=99,
)

PASST_SAMPLE_RATE = 32000  # Hz
PASST_HOP = 320  # 10 ms at 32 kHz
# PaSST's frontend (AugmentMelSTFT, eval): 25 ms Hann in a 32 ms FFT, 10 ms hop, 128 mel to 15 kHz.
PASST_MEL = StftMelConfig(
    sample_rate=PASST_SAMPLE_RATE,
    window_samples=10 * PASST_SAMPLE_RATE,  # 10 s: 1000 frames, 99 time patches
    preemphasis=0.97,
    n_fft=1024,
    hop_length=PASST_HOP,
    win_length=800,
    num_mel_bins=128,
    low_freq=0.0,
    high_freq=15000.0,
    log_offset=1e-5,
    norm_mean=-4.5,
    norm_scale=5.0,
)


def fbank_for_encoder(fbank: FbankConfig, encoder: EncoderConfig) -> FbankConfig:
    """The frontend config whose output is the encoder's input size."""
    return replace(fbank, num_frames=encoder.input_tdim, num_mel_bins=encoder.input_fdim)


def frames_in_window(fbank: FbankConfig, seconds: float) -> int:
    """Kaldi frames (snip edges) in a window of `seconds`: 998 for 10 s at 25 ms / 10 ms."""
    samples = round(seconds * fbank.sample_rate)
    if samples < fbank.frame_length:
        raise ValueError(f"a window of {seconds} s is shorter than one {fbank.frame_length}-sample frame")
    return 1 + (samples - fbank.frame_length) // fbank.frame_shift
