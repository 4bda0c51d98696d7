"""What every checkpoint loader shares: the default bundle name, the source uri, and the
ExportableModel fields that come straight from a converted checkpoint and its frontend."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import torch

from earshot.bundle import Padding
from earshot_export.exportable import ExportableModel

MAX_NAME_LENGTH = 128


class Checkpoint(Protocol):
    """A converted checkpoint (ASTCheckpoint, EncoderCheckpoint, BeatsCheckpoint, ClapCheckpoint)."""

    format: str

    def build(self) -> torch.nn.Module: ...

    def sha256(self) -> str: ...


class Frontend(Protocol):
    """A frontend config: what the bundle's windows are (FbankConfig, StftMelConfig, ClapFrontendConfig)."""

    @property
    def sample_rate(self) -> int: ...

    @property
    def window_samples(self) -> int: ...

    @property
    def hop_samples(self) -> int: ...


def default_name(reference: str, family: str, suffixes: tuple[str, ...]) -> str:
    """The bundle name for a checkpoint file or directory: its name without the first of `suffixes`
    it ends with, characters other than letters, digits and `._-` replaced by `-`, leading `._-`
    dropped, at most MAX_NAME_LENGTH characters; `family` when nothing is left."""
    stem = Path(reference).name
    for suffix in suffixes:
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    cleaned = "".join(c if c.isalnum() or c in "._-" else "-" for c in stem).lstrip("._-")
    return cleaned[:MAX_NAME_LENGTH] or family


def reference_uri(reference: str) -> str:
    """The source uri of a directory or hub id: the resolved local path where one exists, else the id."""
    path = Path(reference)
    return str(path.resolve()) if path.exists() else reference


def exportable_model(
    checkpoint: Checkpoint,
    frontend: Frontend,
    *,
    name: str,
    family: str,
    uri: str,
    embedding_dim: int,
    labels: list[str],
    padding: Padding,
    tag_activation: str,
    notes: dict[str, Any],
    attention_heads: int = 0,
) -> ExportableModel:
    """The ExportableModel of `checkpoint` (built: strict weights, eval mode) with windows as
    `frontend` makes them, and the source recorded as uri, sha256 and format."""
    return ExportableModel(
        module=checkpoint.build(),
        name=name,
        family=family,
        sample_rate=frontend.sample_rate,
        window_samples=frontend.window_samples,
        hop_samples=frontend.hop_samples,
        embedding_dim=embedding_dim,
        labels=labels,
        padding=padding,
        source={"uri": uri, "sha256": checkpoint.sha256(), "format": checkpoint.format},
        tag_activation=tag_activation,
        attention_heads=attention_heads,
        notes=notes,
    )
