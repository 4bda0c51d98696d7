"""LAION's own CLAP checkpoints (laion_clap .pt) -> ExportableModel for `earshot export laion_clap:FILE.pt`.

The .pt is converted into a transformers ClapModel save_pretrained directory in a temporary folder
(earshot_models.checkpoints.laion_clap), which the CLAP loader (loaders/clap.py: load_clap) then
reads like any Hugging Face CLAP: the bundle is the same as `hf:` would make of that directory.
The manifest's source is the .pt itself (its path, its sha256, format "laion-clap-pt"), not the
temporary folder, which lives until the process exits (the export may read it again).

A laion .pt holds no tokenizer (LAION uses roberta-base's): zero-shot labels need one, from
`tokenizer_dir` (roberta-base's tokenizer files). The RoBERTa branch's attention heads are not in
the file: roberta-base's rule (hidden / 64) unless num_heads says otherwise.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

from earshot_export.exportable import ExportableModel
from earshot_export.loaders.clap import load_clap
from earshot_export.loaders.shared import default_name
from earshot_models.checkpoints.io import CheckpointError, sha256_file
from earshot_models.checkpoints.laion_clap import FORMAT, write_transformers_directory

FAMILY = "clap"
SUFFIXES = (".pt", ".pth", ".ckpt")


def _temporary_directory() -> Path:
    directory = Path(tempfile.mkdtemp(prefix="earshot-laion-clap-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    return directory


def load_laion_clap(
    reference: str,
    name: str | None = None,
    labels: list[str] | None = None,
    prompt: str | None = None,
    window_seconds: float | None = None,
    tokenizer_dir: Path | None = None,
    num_heads: int | None = None,
) -> ExportableModel:
    """A laion_clap .pt as a CLAP bundle. labels: zero-shot label set (needs tokenizer_dir);
    prompt, window_seconds: as for load_clap; num_heads: the text branch's attention heads."""
    path = Path(reference)
    if labels and tokenizer_dir is None:
        raise CheckpointError(
            f"{path}: a laion_clap .pt holds no tokenizer, and zero-shot labels are embedded through one: "
            "give roberta-base's tokenizer files (--tokenizer DIR), or export without labels"
        )
    directory = write_transformers_directory(path, _temporary_directory() / "clap", tokenizer_dir, text_heads=num_heads)
    model = load_clap(str(directory), name=name or default_name(reference, FAMILY, SUFFIXES), labels=labels,
                      prompt=prompt, window_seconds=window_seconds)
    model.source = {"uri": str(path.resolve()), "sha256": sha256_file(path), "format": FORMAT}
    model.notes = {**model.notes, "converted": "laion_clap .pt -> transformers ClapModel layout (in memory, "
                   "at export); the text branch's heads: " + str(num_heads or "hidden / 64 (roberta-base)")}
    return model
