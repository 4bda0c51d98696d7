"""What the PaSST, Audio-MAE and SSAST loaders share: an EncoderCheckpoint -> ExportableModel."""

from __future__ import annotations

from collections.abc import Callable

from earshot.bundle import Padding
from earshot_export.audioset import labels_for_head
from earshot_export.exportable import ExportableModel
from earshot_export.loaders.shared import default_name, exportable_model
from earshot_models.checkpoints.encoder_checkpoint import EncoderCheckpoint
from earshot_models.config import EncoderConfig, StftMelConfig

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")
# Audio-MAE and SSAST: AST's dataloader pads the fbank of a short clip to 1024 frames.
KALDI_FRAMES_PADDING = Padding(
    "frames",
    "The reference computes the fbank of the real samples and pads it with log-mel 0 (before "
    "normalisation) to the model's 1024 frames; the graph replaces the frames past num_samples, and "
    "those past the window, by that value.",
)
# PaSST: the frontend runs over whatever clip it is given, and a clip is the window here.
ZEROS_PADDING = Padding(
    "zeros",
    "The window is the clip: a partial window is zero-padded to the window and runs as a zero-padded "
    "clip runs in the reference (its mel frames cover the zeros).",
)


def _minus(value: float) -> str:
    """'- 1.5' or '+ 4.5': subtracting `value`, written without a double sign."""
    return f"- {value}" if value >= 0 else f"+ {-value}"


def frontend_note(checkpoint: EncoderCheckpoint) -> str:
    frontend = checkpoint.frontend
    if isinstance(frontend, StftMelConfig):
        return (
            f"{frontend.sample_rate} Hz, pre-emphasis {frontend.preemphasis} (valid conv), STFT n_fft "
            f"{frontend.n_fft} hop {frontend.hop_length} Hann {frontend.win_length} centred (reflect), "
            f"{frontend.num_mel_bins} Kaldi mel {frontend.low_freq:g}-{frontend.high_freq:g} Hz, "
            f"{frontend.num_frames} frames, (log(mel + {frontend.log_offset:g}) {_minus(frontend.norm_mean)}) / "
            f"{frontend.norm_scale:g}"
        )
    return (
        f"Kaldi fbank: 25 ms / 10 ms, {frontend.window}, pre-emphasis {frontend.preemphasis}, per-frame DC "
        f"removal, {frontend.num_mel_bins} mel, {frontend.computed_frames} frames padded to {frontend.num_frames}, "
        f"(x {_minus(frontend.norm_mean)}) / (2 * {frontend.norm_std})"
    )


def exportable(
    checkpoint: EncoderCheckpoint, family: str, name: str, padding: Padding, labels_given: bool
) -> ExportableModel:
    """labels_given: the checkpoint's labels came from the caller; else a 527-way head gets AudioSet's names."""
    frontend, encoder = checkpoint.frontend, checkpoint.encoder
    labels = checkpoint.labels
    if not labels_given:
        labels = labels_for_head(encoder.num_classes) or labels
    f_dim, t_dim = encoder.grid
    return exportable_model(
        checkpoint,
        frontend,
        name=name,
        family=family,
        uri=str(checkpoint.weights_path.resolve()),
        embedding_dim=encoder.embed_dim,
        labels=labels,
        padding=padding,
        tag_activation="sigmoid",
        attention_heads=encoder.num_heads,  # the exporter fuses attention with ONNX Runtime's optimiser
        notes={
            "frontend": frontend_note(checkpoint),
            "patches": f"{encoder.patch_size}x{encoder.patch_size}, stride {encoder.fstride} (mel) x "
            f"{encoder.tstride} (time), grid {f_dim} x {t_dim}, {encoder.patch_order.replace('_', '-')} tokens",
            "encoder": f"{encoder.depth} layers, {encoder.embed_dim} wide, {encoder.num_heads} heads, "
            f"pooling {encoder.pooling}",
        },
    )


def load_variant(
    read: Callable[..., EncoderCheckpoint],
    base: EncoderConfig,
    default_window_seconds: float,
    family: str,
    padding: Padding,
    path: str,
    name: str | None,
    window_seconds: float | None,
    labels: list[str] | None,
    **geometry: int | None,
) -> ExportableModel:
    """The body of load_passt, load_ssast and load_audiomae: `read` the file with the caller's
    window (default_window_seconds when None) and geometry (num_heads, fstride, tstride: `base`'s
    where None or 0), then make the ExportableModel, named after the file unless `name` is given."""
    checkpoint = read(
        path,
        window_seconds=default_window_seconds if window_seconds is None else window_seconds,
        **{field: value or getattr(base, field) for field, value in geometry.items()},
        labels=labels,
    )
    name = name or default_name(path, family, CHECKPOINT_SUFFIXES)
    return exportable(checkpoint, family, name, padding, labels is not None)
