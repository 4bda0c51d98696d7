"""AST checkpoints (transformers, original .pth) -> ExportableModel for `earshot export`."""

from __future__ import annotations

from pathlib import Path

from earshot.bundle import Padding
from earshot_export.exportable import ExportableModel
from earshot_export.loaders.shared import default_name, exportable_model, reference_uri
from earshot_models.checkpoints.ast import ASTCheckpoint, read_ast_pth, read_hf_checkpoint
from earshot_models.config import AST_BASE, AST_FBANK

FAMILY = "ast"
SUFFIXES = (".pth",)  # cut from a file name to make the default bundle name
PADDING = Padding(
    "frames",
    "AST computes the fbank on the real samples and pads it with zeros (log-mel 0, before "
    "normalisation) to its frame count; the graph replaces frames past num_samples by that value.",
)


def _exportable(checkpoint: ASTCheckpoint, name: str, uri: str) -> ExportableModel:
    fbank, encoder = checkpoint.fbank, checkpoint.encoder
    return exportable_model(
        checkpoint,
        fbank,
        name=name,
        family=FAMILY,
        uri=uri,
        embedding_dim=encoder.embed_dim,
        labels=checkpoint.labels,
        padding=PADDING,
        tag_activation="sigmoid",
        attention_heads=encoder.num_heads,
        notes={
            "frontend": "Kaldi fbank: 25 ms / 10 ms, hanning, pre-emphasis 0.97, per-frame DC removal, "
            f"{fbank.num_mel_bins} mel, {fbank.num_frames} frames, (x - {fbank.norm_mean}) / (2 * {fbank.norm_std})",
            "patches": f"{encoder.patch_size}x{encoder.patch_size}, stride {encoder.fstride} (mel) x "
            f"{encoder.tstride} (time), grid {encoder.grid[0]} x {encoder.grid[1]}",
            "encoder": f"{encoder.depth} layers, {encoder.embed_dim} wide, {encoder.num_heads} heads",
        },
    )


def load_hf(reference: str, name: str | None = None) -> ExportableModel:
    """A transformers AST checkpoint: a save_pretrained directory, or a hub id (needs internet)."""
    checkpoint = read_hf_checkpoint(reference)
    return _exportable(checkpoint, name or default_name(reference, FAMILY, SUFFIXES), reference_uri(reference))


def load_ast_pth(
    path: str,
    name: str | None = None,
    fstride: int = AST_BASE.fstride,
    tstride: int = AST_BASE.tstride,
    input_fdim: int = AST_BASE.input_fdim,
    input_tdim: int = AST_BASE.input_tdim,
    num_heads: int | None = None,
    labels: list[str] | None = None,
    norm_mean: float = AST_FBANK.norm_mean,
    norm_std: float = AST_FBANK.norm_std,
) -> ExportableModel:
    """An original AST .pth (module.v.* keys). The file records neither strides, input size nor
    heads: AST's defaults are 10, 10, 128 x 1024 and embed_dim // 64 heads (num_heads=None).
    labels: one per class, in the head's order; `class_<i>` when None. norm_mean / norm_std: the
    fbank statistics the model was trained with (AudioSet's by default; AST's ESC-50 recipe uses
    -6.6268077 / 5.358466, its Speech Commands one -6.845978 / 5.5654526)."""
    checkpoint = read_ast_pth(
        path,
        fstride=fstride,
        tstride=tstride,
        input_fdim=input_fdim,
        input_tdim=input_tdim,
        num_heads=num_heads,
        labels=labels,
        norm_mean=norm_mean,
        norm_std=norm_std,
    )
    return _exportable(checkpoint, name or default_name(path, FAMILY, SUFFIXES), str(Path(path).resolve()))
