"""Hugging Face Hub references: a checkpoint named by its hub id, fetched into the local cache."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from earshot_models.checkpoints.io import CheckpointError

HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")  # 'owner/name'


def hub_snapshot(reference: str | Path, patterns: Sequence[str]) -> Path:
    """`reference`, which is no local path, as a hub id: the directory of the repo's files that match
    `patterns` in the local Hugging Face cache (needs internet the first time)."""
    if not HUB_ID.fullmatch(str(reference)):
        raise CheckpointError(f"{reference}: no such directory (and not a hub id like 'owner/name')")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(str(reference), allow_patterns=list(patterns)))
    except Exception as error:  # offline, unknown repo, gated repo, ...
        raise CheckpointError(f"cannot fetch {reference!r} from the Hugging Face Hub: {error}") from error
