"""AudioSet's 527 class display names, in the order of `class_labels_indices.csv`: the order of
every head trained on AudioSet's 527 classes (AST, PaSST, Audio-MAE, SSAST, BEATs, PANNs).

`audioset_labels.csv` beside this module holds them (index,display_name): the display names of
the AudioSet ontology (Google, CC BY-SA 4.0), as shipped in the laion-clap 1.1.7 wheel on PyPI
(`laion_clap/training/audioset_textmap.npy`, 527 names in class-index order).
"""

from __future__ import annotations

import csv
import io
from functools import cache
from importlib import resources

NUM_CLASSES = 527
LABELS_FILE = "audioset_labels.csv"


@cache
def _names() -> tuple[str, ...]:
    text = resources.files("earshot_export").joinpath(LABELS_FILE).read_text(encoding="utf-8")
    rows = list(csv.reader(io.StringIO(text)))[1:]  # after the header
    if [int(row[0]) for row in rows] != list(range(NUM_CLASSES)):
        raise RuntimeError(f"{LABELS_FILE} must list indices 0..{NUM_CLASSES - 1} in order")
    return tuple(row[1] for row in rows)


def audioset_labels() -> list[str]:
    return list(_names())


def labels_for_head(num_classes: int) -> list[str] | None:
    """AudioSet's names for a 527-way head (a checkpoint file that carries no labels); None otherwise."""
    return audioset_labels() if num_classes == NUM_CLASSES else None
