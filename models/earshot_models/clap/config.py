"""CLAP's frontend configuration: what transformers' ClapFeatureExtractor computes for an unfused model.

For a model without feature fusion (laion/clap-htsat-unfused and the like), the extractor's
preprocessor_config.json has truncation "rand_trunc" and padding "repeatpad": a clip shorter than
`max_length_s` is tiled a whole number of times and zero-padded to it; a longer one is cut at a
random place (earshot's windows make that cut deterministic: each window is one crop). Then a
centred STFT (reflect padding), periodic Hann window, power, Slaney-scale mel filters with
Slaney area normalisation, and 10 log10(max(mel, 1e-10)). (The extractor keeps a `top_db` setting
but never applies it: its spectrogram call passes no db_range. Neither do we.)
"""

from __future__ import annotations

from dataclasses import dataclass

MEL_SCALES = ("htk", "slaney")
MEL_NORMS = (None, "slaney")
PADDINGS = ("repeatpad", "repeat", "pad")


@dataclass(frozen=True)
class ClapFrontendConfig:
    sample_rate: int  # Hz
    window_samples: int  # samples per model window (max_length_s * sample_rate)
    n_fft: int  # fft_window_size; the Hann window spans all of it
    hop_length: int  # samples between frames
    num_mel_bins: int  # feature_size
    f_min: float  # frequency_min, Hz
    f_max: float  # frequency_max, Hz
    mel_scale: str  # "slaney" for rand_trunc (unfused) models, "htk" for fusion models
    mel_norm: str | None  # "slaney" area normalisation, or None
    padding: str  # how a clip shorter than the window is completed: "repeatpad", "repeat" or "pad"
    power_floor: float  # the extractor's mel_floor / min_value: 1e-10 (-100 dB)

    @property
    def num_fft_bins(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def num_frames(self) -> int:
        """Centred frames: one every hop_length samples, from 0 to window_samples inclusive."""
        return 1 + self.window_samples // self.hop_length

    @property
    def hop_samples(self) -> int:
        """Back-to-back windows: each window is one crop to the extractor."""
        return self.window_samples

    def validate(self) -> None:
        if self.mel_scale not in MEL_SCALES:
            raise ValueError(f"mel_scale {self.mel_scale!r} not one of {MEL_SCALES}")
        if self.mel_norm not in MEL_NORMS:
            raise ValueError(f"mel_norm {self.mel_norm!r} not one of {MEL_NORMS}")
        if self.padding not in PADDINGS:
            raise ValueError(f"padding {self.padding!r} not one of {PADDINGS}")
        if not 0.0 <= self.f_min < self.f_max <= self.sample_rate / 2:
            raise ValueError(f"need 0 <= f_min < f_max <= Nyquist; got {self.f_min}, {self.f_max}")
        if self.window_samples <= self.n_fft // 2:
            raise ValueError("the window must be longer than half the FFT (reflect padding)")


# laion/clap-htsat-unfused's preprocessor_config.json (and ClapFeatureExtractor's defaults where
# it says nothing): 48 kHz, 10 s, 1024-point FFT every 480 samples (10 ms), 64 mel from 50 Hz to 14 kHz.
CLAP_UNFUSED_FRONTEND = ClapFrontendConfig(
    sample_rate=48000,
    window_samples=480000,
    n_fft=1024,
    hop_length=480,
    num_mel_bins=64,
    f_min=50.0,
    f_max=14000.0,
    mel_scale="slaney",
    mel_norm="slaney",
    padding="repeatpad",
    power_floor=1e-10,
)


@dataclass(frozen=True)
class HtsatConfig:
    """HTS-AT (Chen et al., 2022), CLAP's audio encoder, with its projection into the joint space.

    The (frames, mel) log-mel is resized to (spec_size * freq_ratio, spec_size / freq_ratio) and
    folded into a spec_size x spec_size image (freq_ratio = spec_size // num_mel_bins time chunks
    stacked along the mel axis), then a Swin transformer (window attention, shifted every second
    block, patch merging between stages), a final LayerNorm, the mean over tokens, and the
    projection MLP. Field names follow transformers' ClapAudioConfig where one exists.
    """

    spec_size: int  # the square image side (256)
    num_mel_bins: int  # 64
    patch_size: int  # conv kernel (4)
    patch_stride: int  # conv stride (4); padding (patch_size - patch_stride) // 2
    embed_dim: int  # patch_embeds_hidden_size: stage 0 width, doubled by each patch merging (96)
    depths: tuple[int, ...]  # blocks per stage ((2, 2, 6, 2))
    num_heads: tuple[int, ...]  # per stage ((4, 8, 16, 32))
    window_size: int  # attention windows of window_size x window_size tokens (8)
    mlp_ratio: float  # hidden width of the block MLP, times the stage width (4.0)
    qkv_bias: bool
    patch_norm: bool  # enable_patch_layer_norm: LayerNorm after the patch conv
    layer_norm_eps: float  # blocks' LayerNorms (the merging and final norms use torch's 1e-5)
    batch_norm_eps: float  # the input BatchNorm over mel bins
    projection_dim: int  # joint embedding size (512)

    @property
    def freq_ratio(self) -> int:
        return self.spec_size // self.num_mel_bins

    @property
    def image_frames(self) -> int:
        """Frames the mel is resized to before folding (spec_size * freq_ratio)."""
        return self.spec_size * self.freq_ratio

    @property
    def grid(self) -> int:
        """Tokens per side after the patch conv."""
        return self.spec_size // self.patch_stride

    @property
    def num_features(self) -> int:
        """Width of the last stage."""
        return self.embed_dim * 2 ** (len(self.depths) - 1)

    def stage_resolution(self, stage: int) -> int:
        return self.grid // 2**stage

    def validate(self) -> None:
        if len(self.depths) != len(self.num_heads) or not self.depths:
            raise ValueError(f"depths {self.depths} and num_heads {self.num_heads} must be non-empty and match")
        if self.spec_size % self.num_mel_bins or self.freq_ratio < 1:
            raise ValueError(f"spec_size {self.spec_size} must be a multiple of num_mel_bins {self.num_mel_bins}")
        for stage, heads in enumerate(self.num_heads):
            resolution = self.stage_resolution(stage)
            if resolution < 1 or (self.embed_dim * 2**stage) % heads:
                raise ValueError(f"stage {stage}: resolution {resolution}, width not divisible by {heads} heads")
            window = min(self.window_size, resolution)
            if resolution % window:
                raise ValueError(f"stage {stage}: resolution {resolution} is not a multiple of window {window}")
