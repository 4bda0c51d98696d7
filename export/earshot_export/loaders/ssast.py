"""Fine-tuned SSAST checkpoints (.pth) -> ExportableModel for `earshot export ssast:<file>`."""

from __future__ import annotations

from earshot_export.exportable import ExportableModel
from earshot_export.loaders.encoder_family import KALDI_FRAMES_PADDING, load_variant
from earshot_models.checkpoints.ssast import DEFAULT_WINDOW_SECONDS, read_ssast
from earshot_models.config import SSAST_BASE

FAMILY = "ssast"


def load_ssast(
    path: str,
    name: str | None = None,
    window_seconds: float | None = None,
    num_heads: int | None = None,
    fstride: int | None = None,
    tstride: int | None = None,
    labels: list[str] | None = None,
) -> ExportableModel:
    """A fine-tuned SSAST .pth (module.v.*, module.mlp_head.*). window_seconds: the bundle's window
    at 16 kHz (default 10 s, at most 10.24 s; the fbank is padded to the model's 1024 frames).
    num_heads: not in the file (default 12, the Base models'). fstride / tstride: default 10.
    labels: one per class; AudioSet's names for a 527-way head when None."""
    return load_variant(
        read_ssast, SSAST_BASE, DEFAULT_WINDOW_SECONDS, FAMILY, KALDI_FRAMES_PADDING,
        path, name, window_seconds, labels, num_heads=num_heads, fstride=fstride, tstride=tstride
    )
