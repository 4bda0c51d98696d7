"""CLAP's frontend configuration: what transformers' ClapFeatureExtractor computes for an unfused model.

For a model without feature fusion (laion/clap-htsat-unfused and the like), the extractor's
preprocessor_config.json has truncation "rand_trunc" and padding "repeatpad": a clip shorter than
`max_length_s` is tiled a whole number of times and zero-padded to it; a longer one is cut at a
random place (earshot's windows make that cut deterministic: each window is one crop). Then a
centred STFT (reflect padding), periodic Hann window, power, Slaney-scale mel filters with
Slaney area normalisation, and 10 log10(max(mel, 1e-10)) (optionally clipped to top_db below the
window's maximum).
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
    top_db: float | None  # clip to (window maximum - top_db) dB; None: no clipping

    @property
    def num_fft_bins(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def num_frames(self) -> int:
        """Centred frames: one every hop_length samples, from 0 to window_samples inclusive."""
        return 1 + self.window_samples // self.hop_length

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
        if self.top_db is not None and self.top_db <= 0:
            raise ValueError("top_db must be positive")


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
    top_db=None,
)
