"""BEATs .pt files -> ExportableModel for `earshot export beats:<file.pt>`.

Pre-trained files give an embedding-only bundle (the mean of the output tokens); fine-tuned files
add logits (the token-averaged predictor output; tags = sigmoid, as BEATs computes them), labelled
with the file's label_dict values. Released AudioSet files label their 527 classes with AudioSet
ids ("/m/09x0r") in class-index order; those become AudioSet's display names by index
(earshot_export.audioset, the order of class_labels_indices.csv), and the ids stay in the
manifest's notes. --labels overrides: AudioSet's `class_labels_indices.csv` (index,mid,display_name)
maps each id to its display name by id; a plain list (one label per line) replaces the labels.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from earshot.bundle import Padding
from earshot_export.audioset import labels_for_head
from earshot_export.exportable import ExportableModel
from earshot_export.loaders.shared import default_name, exportable_model
from earshot_models.beats.config import DEFAULT_WINDOW_SECONDS
from earshot_models.checkpoints.beats import BeatsCheckpoint, read_beats_checkpoint
from earshot_models.checkpoints.io import CheckpointError

FAMILY = "beats"
SUFFIXES = (".pt",)  # cut from a file name to make the default bundle name
AUDIOSET_ID = re.compile(r"/[mgt]/[0-9a-z_]+")  # a Freebase / Google knowledge-graph id, as AudioSet uses
PADDING = Padding(
    "frames",
    "BEATs sees only the whole 16-frame patches of a clip: tokens of patches that reach past "
    "num_samples are zeroed before the position conv, masked out of attention and out of the mean "
    "(the first patch always counts), which gives what BEATs gives on the clip alone.",
)


def read_label_names(path: Path) -> dict[str, str] | list[str]:
    """AudioSet's class_labels_indices.csv -> {mid: display_name}; any other file -> one label per line
    (or the last column of a CSV)."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.reader(handle) if row]
    header = [cell.strip().lower() for cell in rows[0]] if rows else []
    if "mid" in header and "display_name" in header:
        mid, name = header.index("mid"), header.index("display_name")
        return {row[mid].strip(): row[name].strip() for row in rows[1:]}
    if header and header[-1] in ("label", "name"):
        rows = rows[1:]
    return [row[-1].strip() for row in rows]


def apply_label_names(labels: list[str], names: dict[str, str] | list[str], where: str) -> list[str]:
    if isinstance(names, list):
        if len(names) != len(labels):
            raise CheckpointError(f"{where}: {len(names)} labels given for a predictor with {len(labels)} classes")
        return names
    missing = [label for label in labels if label not in names]
    if missing:
        raise CheckpointError(f"{where}: label id {missing[0]!r} is not in the names file ({len(missing)} missing)")
    return [names[label] for label in labels]


def exportable(
    checkpoint: BeatsCheckpoint, name: str, uri: str, labels: list[str], label_notes: dict | None = None
) -> ExportableModel:
    fbank, encoder = checkpoint.fbank, checkpoint.encoder
    return exportable_model(
        checkpoint,
        fbank,
        name=name,
        family=FAMILY,
        uri=uri,
        embedding_dim=encoder.embed_dim,
        labels=labels,
        padding=PADDING,
        tag_activation="sigmoid",
        notes={
            "frontend": f"Kaldi fbank on wave * {fbank.wave_scale:g}: 25 ms / 10 ms, povey, pre-emphasis 0.97, "
            f"per-frame DC removal, {fbank.num_mel_bins} mel, {fbank.num_frames} frames, "
            f"(x - {fbank.norm_mean}) / (2 * {fbank.norm_std})",
            "patches": f"{encoder.patch_size}x{encoder.patch_size}, grid {encoder.grid[0]} (time) x {encoder.grid[1]} (mel)",
            "encoder": f"{encoder.depth} layers, {encoder.embed_dim} wide, {encoder.num_heads} heads, post-LN"
            + (", deep norm" if encoder.deep_norm else "")
            + (", gated relative position bias" if encoder.gated_relative_position else ""),
            "embedding": "mean of the output tokens",
            "tags": "trained (fine-tuned predictor)" if checkpoint.finetuned else "none (pre-trained checkpoint)",
            "tag_kind": "trained" if checkpoint.finetuned else "none",
            **(label_notes or {}),
        },
    )


def load_beats(
    path: str,
    name: str | None = None,
    window_seconds: float | None = None,
    labels_file: Path | None = None,
) -> ExportableModel:
    """A BEATs .pt ({"cfg", "model"[, "label_dict"]}), for windows of `window_seconds` (default 10 s;
    cut to whole 16-frame patches). labels_file: see the module docstring."""
    checkpoint = read_beats_checkpoint(path, window_seconds or DEFAULT_WINDOW_SECONDS)
    labels, notes = checkpoint.labels, {}
    if labels_file is not None:
        if not checkpoint.finetuned:
            raise CheckpointError(f"{path}: a pre-trained BEATs file has no predictor to label")
        labels = apply_label_names(labels, read_label_names(labels_file), str(labels_file))
        notes = {"label_ids": checkpoint.labels, "label_names": f"from {Path(labels_file).name}"}
    elif labels and all(AUDIOSET_ID.fullmatch(label) for label in labels):
        names = labels_for_head(len(labels))
        if names is not None:
            labels = names
            notes = {"label_ids": checkpoint.labels, "label_names": "AudioSet display names by class index"}
    name = name or default_name(path, FAMILY, SUFFIXES)
    return exportable(checkpoint, name, str(Path(path).resolve()), labels, notes)
