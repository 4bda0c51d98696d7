"""What `earshot embed INPUT...` means: files, folders (recursive) and manifests -> a list of paths.

- a folder: every file below it whose extension is an audio one, in sorted order (the others are
  reported as skipped; hidden files, whose names start with ".", are passed over without a word,
  while hidden folders are walked like any other);
- a manifest: a `.csv` file with a `path` column, or a `.txt` / `.lst` file with one path per line
  (blank lines and `#` comments skipped); relative paths are relative to the manifest's folder;
- anything else: an audio file, whatever its extension: a file named directly (but a `.csv`,
  `.txt` or `.lst`, which is read as a manifest) or listed in a manifest is always tried (a missing
  or undecodable one becomes a row with an error, not a crash).
Paths are kept as found: absolute when the input was absolute.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

AUDIO_EXTENSIONS = frozenset(
    {".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc", ".caf", ".w64", ".rf64"}
)
TEXT_MANIFEST_EXTENSIONS = frozenset({".txt", ".lst"})
CSV_MANIFEST_EXTENSIONS = frozenset({".csv"})


class ManifestError(ValueError):
    """A manifest that cannot be read (no `path` column, not text)."""


def expand_inputs(inputs: list[str], skipped: list[str] | None = None) -> list[str]:
    """Every audio path the inputs name, each once, in the order given (folders sorted).

    skipped, when given, receives the files found in folders whose extension is not audio's.
    """
    seen: set[str] = set()
    paths: list[str] = []
    found_not_audio: list[str] = []
    for entry in inputs:
        for path in _expand_one(entry, found_not_audio):
            if path not in seen:
                seen.add(path)
                paths.append(path)
    if skipped is not None:  # each once, and none that another input named (it is tried, then)
        skipped.extend(path for path in dict.fromkeys(found_not_audio) if path not in seen)
    return paths


def _expand_one(entry: str, skipped: list[str]) -> list[str]:
    path = Path(entry)
    if path.is_dir():
        return [str(p) for p in _walk_audio(path, skipped)]
    suffix = path.suffix.lower()
    if path.is_file() and suffix in CSV_MANIFEST_EXTENSIONS:
        return _read_csv_manifest(path)
    if path.is_file() and suffix in TEXT_MANIFEST_EXTENSIONS:
        return _read_text_manifest(path)
    return [entry]


def _walk_audio(root: Path, skipped: list[str]) -> list[Path]:
    found = []
    for directory, subdirectories, files in os.walk(root, followlinks=False):
        subdirectories.sort()
        for name in sorted(files):
            if name.startswith("."):
                continue
            if Path(name).suffix.lower() in AUDIO_EXTENSIONS:
                found.append(Path(directory) / name)
            else:
                skipped.append(str(Path(directory) / name))
    return found


def _relative_to(manifest: Path, entry: str) -> str:
    entry_path = Path(entry).expanduser()
    return str(entry_path if entry_path.is_absolute() else manifest.parent / entry_path)


def _read_text_manifest(manifest: Path) -> list[str]:
    try:
        lines = manifest.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise ManifestError(f"{manifest}: not a UTF-8 text manifest ({error})") from error
    entries = [line.strip() for line in lines]
    return [_relative_to(manifest, entry) for entry in entries if entry and not entry.startswith("#")]


def _read_csv_manifest(manifest: Path) -> list[str]:
    try:
        with open(manifest, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or "path" not in reader.fieldnames:
                raise ManifestError(f"{manifest}: a CSV manifest needs a 'path' column (has {reader.fieldnames})")
            return [_relative_to(manifest, row["path"].strip()) for row in reader if (row["path"] or "").strip()]
    except UnicodeDecodeError as error:
        raise ManifestError(f"{manifest}: not a UTF-8 CSV manifest ({error})") from error
