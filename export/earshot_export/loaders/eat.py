"""Fine-tuned EAT checkpoints (fairseq .pt) -> ExportableModel for `earshot export eat:<file>`."""

from __future__ import annotations

from earshot.bundle import Padding
from earshot_export.audioset import labels_for_head
from earshot_export.exportable import ExportableModel
from earshot_export.loaders.encoder_family import CHECKPOINT_SUFFIXES
from earshot_export.loaders.shared import default_name, exportable_model
from earshot_models.checkpoints.eat import DEFAULT_WINDOW_SECONDS, EATCheckpoint, read_eat

FAMILY = "eat"
# EAT's dataloader (and inference.py) pads the fbank of a short clip to target_length frames.
EAT_FRAMES_PADDING = Padding(
    "frames",
    "The reference computes the fbank of the real samples and pads it with log-mel 0 (before "
    "normalisation) to the model's target_length frames; the graph replaces the frames past num_samples, "
    "and those past the window, by that value.",
)


def _notes(checkpoint: EATCheckpoint) -> dict[str, str]:
    frontend, encoder = checkpoint.frontend, checkpoint.encoder
    time_patches, mel_patches = encoder.grid
    return {
        "frontend": f"Kaldi fbank: 25 ms / 10 ms, {frontend.window}, pre-emphasis {frontend.preemphasis}, per-frame "
        f"DC removal, {frontend.num_mel_bins} mel, {frontend.computed_frames} frames padded to {frontend.num_frames}, "
        f"(x + {-frontend.norm_mean}) / (2 * {frontend.norm_std})",
        "patches": f"{encoder.patch_size}x{encoder.patch_size}, stride {encoder.patch_size}, grid {time_patches} "
        f"(time) x {mel_patches} (mel), time-major tokens; fixed position table of {checkpoint.table_time_patches} "
        f"time rows, the first {time_patches} used",
        "encoder": f"{encoder.depth} post-LN layers, {encoder.embed_dim} wide, {encoder.num_heads} heads, pooling "
        f"{encoder.pooling}{', fc_norm' if encoder.fc_norm else ''}",
    }


def load_eat(
    path: str,
    name: str | None = None,
    window_seconds: float | None = None,
    num_heads: int | None = None,
    labels: list[str] | None = None,
) -> ExportableModel:
    """A fine-tuned EAT .pt. window_seconds: the bundle's window at 16 kHz (default 10 s; at most the
    model's target_length frames, 10.24 s for the released files). num_heads: read from the file's cfg
    (give it only for a file without one). labels: one per class; AudioSet's names for a 527-way head when None."""
    checkpoint = read_eat(
        path,
        window_seconds=DEFAULT_WINDOW_SECONDS if window_seconds is None else window_seconds,
        num_heads=num_heads,
        labels=labels,
    )
    encoder = checkpoint.encoder
    names = checkpoint.labels if labels is not None else labels_for_head(encoder.num_classes) or checkpoint.labels
    return exportable_model(
        checkpoint,
        checkpoint.frontend,
        name=name or default_name(path, FAMILY, CHECKPOINT_SUFFIXES),
        family=FAMILY,
        uri=str(checkpoint.weights_path.resolve()),
        embedding_dim=encoder.embed_dim,
        labels=names,
        padding=EAT_FRAMES_PADDING,
        tag_activation="sigmoid",
        attention_heads=encoder.num_heads,
        notes=_notes(checkpoint),
    )
