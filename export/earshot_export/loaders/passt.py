"""PaSST checkpoints (`passt-s-*.pt`) -> ExportableModel for `earshot export passt:<file>`."""

from __future__ import annotations

from earshot_export.exportable import ExportableModel
from earshot_export.loaders.encoder_family import ZEROS_PADDING, load_variant
from earshot_models.checkpoints.passt import DEFAULT_WINDOW_SECONDS, read_passt
from earshot_models.config import PASST_BASE

FAMILY = "passt"


def load_passt(
    path: str,
    name: str | None = None,
    window_seconds: float | None = None,
    num_heads: int | None = None,
    fstride: int | None = None,
    tstride: int | None = None,
    labels: list[str] | None = None,
) -> ExportableModel:
    """A PaSST state dict. window_seconds: the bundle's window at 32 kHz (default 10 s; at most
    ~10 s for the released models, whose time position table holds 99 columns). num_heads: not in
    the file (default 12, the released models'). fstride / tstride: default 10 (passt-s-*-s10).
    labels: one per class; AudioSet's names for a 527-way head when None, else class_<i>."""
    return load_variant(
        read_passt, PASST_BASE, DEFAULT_WINDOW_SECONDS, FAMILY, ZEROS_PADDING,
        path, name, window_seconds, labels, num_heads=num_heads, fstride=fstride, tstride=tstride
    )
