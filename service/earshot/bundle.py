"""The model bundle: the one seam between where bundles are made and where they are served.

A bundle is a directory (README, "Model bundles and families"):

    <bundle>/
      manifest.json   format "earshot-bundle/1", names, shapes, window, labels, checksums, parity
      model.onnx      waveform [batch, context.before + window_samples + context.after] float32
                      (+ num_samples [batch] int64) -> embedding [batch, dim] (+ logits [batch, n_labels])
      labels.csv      index,label
      probe.npz       the self-test: a few windows of deterministic audio and the outputs they must give
      text.onnx       CLAP only: input_ids, attention_mask [batch, tokens] int64 -> text_embedding [batch, dim]
      tokenizer.json  CLAP only: the text tower's tokenizer (the `tokenizers` library)

This module reads and writes that directory and nothing else. It imports neither torch nor
onnxruntime, so both the export side and the serving side can use it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

FORMAT = "earshot-bundle/1"
MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.onnx"
LABELS_FILE = "labels.csv"
PROBE_FILE = "probe.npz"

# Names of the graph's inputs and outputs. Every bundle uses these; the manifest records them too.
WAVEFORM_INPUT = "waveform"  # float32 [batch, input_samples], mono, at sample_rate, full scale 1.0
NUM_SAMPLES_INPUT = "num_samples"  # int64 [batch]: how many leading samples of the window are real
EMBEDDING_OUTPUT = "embedding"  # float32 [batch, embedding_dim]
LOGITS_OUTPUT = "logits"  # float32 [batch, num_labels]
FRAMES_OUTPUT = "frames"  # float32 [batch, n_frames, frame_dim]: frame features (speech encoders)
# the text tower's graph (CLAP): right-padded token ids -> the L2-normalised text embedding
TEXT_MODEL_FILE = "text.onnx"
TOKENIZER_FILE = "tokenizer.json"
TEXT_PROBE_FILE = "text_probe.npz"  # texts, the token ids the tokenizer gave at export, the embeddings
INPUT_IDS_INPUT = "input_ids"  # int64 [batch, tokens]
ATTENTION_MASK_INPUT = "attention_mask"  # int64 [batch, tokens]: 1 for real tokens, 0 for padding
TEXT_EMBEDDING_OUTPUT = "text_embedding"  # float32 [batch, embedding_dim], in the audio embedding's space

PRECISIONS = ("fp32", "fp16", "int8")
TAG_ACTIVATIONS = ("sigmoid", "softmax", "none")
CONTEXT_EDGES = ("zeros", "reflect")
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class BundleError(Exception):
    """A bundle directory that is missing, malformed, or fails its checksums."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy dtype name: "float32", "int64", ...
    shape: list[int | str]  # "batch" marks the dynamic axis


@dataclass(frozen=True)
class Padding:
    """How the last, partial window is completed, so the engine pads the way the reference does.

    mode "zeros": the waveform is zero-padded to window_samples (the graph ignores num_samples);
    mode "frames": the waveform is zero-padded, and the graph uses num_samples to replace the
    frontend frames past the real audio by the reference model's padding value (AST pads its fbank
    with zeros to the model's frame count).
    """

    mode: str
    description: str


@dataclass(frozen=True)
class Context:
    """Real audio around each window that the graph sees but does not describe.

    The graph's waveform input holds `before` + window_samples + `after` samples: window i's own
    span is samples [i * hop, i * hop + window_samples) of the clip, preceded by the `before`
    samples of the clip that come before it and followed by the `after` samples that follow it.
    A frontend whose frames reach past the window's edges (an STFT with center=True) then sees
    the clip's real neighbours, as it does over a whole clip. Context before the clip's start, and
    after its end behind a window that lies within the clip, is the clip padded per `edge`:
    "reflect" (numpy's reflect padding of the clip, as torch.stft center=True pads a whole clip)
    or "zeros". A window that runs past the clip's end is zero-padded (Padding) and so is its
    context after it. The default, no context, is a graph that sees the window alone.
    """

    before: int = 0
    after: int = 0
    edge: str = "zeros"


@dataclass(frozen=True)
class FrameGrid:
    """Where a graph's frame features sit in its window (the `frames` output).

    Frame j of a window starting at sample s covers the hop cell [s + j * hop_samples,
    s + (j + 1) * hop_samples) (what its timestamps say); its receptive field is
    receptive_samples long from s + j * hop_samples. `count` frames per window.
    """

    hop_samples: int
    receptive_samples: int
    count: int


@dataclass(frozen=True)
class TextTower:
    """A text encoder beside the audio graph, in the same embedding space (CLAP).

    Its graph takes right-padded token ids (padding holds `pad_id`, mask 0) of at most `max_tokens`
    tokens, special tokens included, as `tokenizer_file` makes them, and returns unit-norm
    embeddings. Zero-shot scores are a softmax over labels of logit_scale * cos(audio, prompt)
    with prompt = `prompt`.format(label) (CLAP's logits_per_audio).
    """

    model_file: str = TEXT_MODEL_FILE
    tokenizer_file: str = TOKENIZER_FILE
    prompt: str = "{}"
    max_tokens: int = 512
    pad_id: int = 0
    logit_scale: float = 1.0
    precision: str = "fp32"
    inputs: list[TensorSpec] = field(default_factory=list)
    outputs: list[TensorSpec] = field(default_factory=list)
    parity: dict[str, Any] = field(default_factory=dict)
    # the text tower's self-test: at load, the tokenizer must give the ids it gave at export and
    # the graph embeddings within this cosine of the export's (None: a bundle made without one)
    probe_file: str | None = None
    probe_min_cosine: float = 0.9999

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TextTower:
        fields = dict(data)
        fields["inputs"] = [TensorSpec(**t) for t in fields.get("inputs", [])]
        fields["outputs"] = [TensorSpec(**t) for t in fields.get("outputs", [])]
        return cls(**fields)

    def problems(self, embedding_dim: int, files: dict[str, str]) -> list[str]:
        found = []
        if self.prompt.count("{}") != 1:
            found.append(f"text prompt {self.prompt!r} must contain '{{}}' exactly once")
        if self.max_tokens < 2:
            found.append(f"text max_tokens {self.max_tokens} must be at least 2")
        if not self.logit_scale > 0:
            found.append(f"text logit_scale {self.logit_scale} must be positive")
        if files and self.probe_file is not None and self.probe_file not in files:
            found.append(f"text probe {self.probe_file!r} needs a checksum in the manifest")
        if files and (self.model_file not in files or self.tokenizer_file not in files):
            found.append(f"text files {self.model_file!r}, {self.tokenizer_file!r} need checksums in the manifest")
        if [i.name for i in self.inputs] != [INPUT_IDS_INPUT, ATTENTION_MASK_INPUT]:
            found.append(f"text inputs must be {INPUT_IDS_INPUT!r}, {ATTENTION_MASK_INPUT!r}")
        out = [o for o in self.outputs if o.name == TEXT_EMBEDDING_OUTPUT]
        if not out or out[0].shape[-1] != embedding_dim:
            found.append(f"text output {TEXT_EMBEDDING_OUTPUT!r} must be [batch, {embedding_dim}]")
        return found


@dataclass(frozen=True)
class Manifest:
    name: str
    family: str
    sample_rate: int
    window_samples: int
    hop_samples: int
    embedding_dim: int
    num_labels: int
    precision: str
    padding: Padding
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    tag_activation: str = "sigmoid"  # applied to logits to make tag scores
    source: dict[str, Any] = field(default_factory=dict)  # {"uri", "sha256", "format"}
    labels_file: str | None = LABELS_FILE
    model_file: str = MODEL_FILE
    files: dict[str, str] = field(default_factory=dict)  # relative path -> sha256
    parity: dict[str, Any] = field(default_factory=dict)
    providers: dict[str, Any] = field(default_factory=dict)  # per-provider options (TensorRT, CUDA)
    notes: dict[str, Any] = field(default_factory=dict)  # free-form provenance, licence, choices
    context: Context = field(default_factory=Context)  # samples of the clip around each window
    # the self-test (service/engine/self_test.py): {"file", "windows", "tolerance", "reference", ...};
    # empty in bundles written before it existed, which load with a warning
    probe: dict[str, Any] = field(default_factory=dict)
    text: TextTower | None = None  # the text tower (CLAP); None: audio only
    frame_grid: FrameGrid | None = None  # with a `frames` output: where its frames sit
    format: str = FORMAT

    # -- derived ---------------------------------------------------------------------------------
    @property
    def window_seconds(self) -> float:
        return self.window_samples / self.sample_rate

    @property
    def input_samples(self) -> int:
        """The graph's waveform length: the window with its context."""
        return self.context.before + self.window_samples + self.context.after

    @property
    def hop_seconds(self) -> float:
        return self.hop_samples / self.sample_rate

    @property
    def has_logits(self) -> bool:
        return any(o.name == LOGITS_OUTPUT for o in self.outputs)

    @property
    def has_frames(self) -> bool:
        return any(o.name == FRAMES_OUTPUT for o in self.outputs)

    @property
    def has_text(self) -> bool:
        return self.text is not None

    @property
    def takes_num_samples(self) -> bool:
        return any(i.name == NUM_SAMPLES_INPUT for i in self.inputs)

    def summary(self) -> dict[str, Any]:
        """What `earshot models` and `GET /v1/models` show."""
        return {
            "name": self.name,
            "family": self.family,
            "precision": self.precision,
            "sample_rate": self.sample_rate,
            "window_seconds": round(self.window_seconds, 4),
            "hop_seconds": round(self.hop_seconds, 4),
            "embedding_dim": self.embedding_dim,
            "num_labels": self.num_labels,
            "source": self.source.get("uri"),
            # trained tags, zero-shot tags (CLAP with --labels) or none, where the exporter said
            "tags": self.notes.get("tag_kind", "trained" if self.has_logits else "none"),
            "modalities": ["audio", "text"] if self.has_text else ["audio"],
        }

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        if data.get("format") != FORMAT:
            raise BundleError(f"unsupported bundle format {data.get('format')!r}; expected {FORMAT!r}")
        try:
            fields = dict(data)
            fields["padding"] = Padding(**fields["padding"])
            if "context" in fields:  # absent in manifests written before it existed: no context
                fields["context"] = Context(**fields["context"])
            fields["inputs"] = [TensorSpec(**t) for t in fields["inputs"]]
            fields["outputs"] = [TensorSpec(**t) for t in fields["outputs"]]
            if fields.get("text") is not None:
                fields["text"] = TextTower.from_json(fields["text"])
            if fields.get("frame_grid") is not None:
                fields["frame_grid"] = FrameGrid(**fields["frame_grid"])
            manifest = cls(**fields)
        except (KeyError, TypeError) as error:
            raise BundleError(f"malformed manifest: {error}") from error
        manifest.validate()
        return manifest

    def validate(self) -> None:
        problems = []
        if not _NAME_PATTERN.match(self.name):
            problems.append(f"name {self.name!r} must match {_NAME_PATTERN.pattern}")
        if self.precision not in PRECISIONS:
            problems.append(f"precision {self.precision!r} not one of {PRECISIONS}")
        if self.tag_activation not in TAG_ACTIVATIONS:
            problems.append(f"tag_activation {self.tag_activation!r} not one of {TAG_ACTIVATIONS}")
        if self.padding.mode not in ("zeros", "frames"):
            problems.append(f"padding mode {self.padding.mode!r} not 'zeros' or 'frames'")
        if self.sample_rate <= 0 or self.window_samples <= 0 or self.hop_samples <= 0:
            problems.append("sample_rate, window_samples and hop_samples must be positive")
        if not isinstance(self.context.before, int) or not isinstance(self.context.after, int):
            problems.append("context before and after must be integers")
        elif self.context.before < 0 or self.context.after < 0:
            problems.append(f"context before {self.context.before} and after {self.context.after} must be >= 0")
        if self.context.edge not in CONTEXT_EDGES:
            problems.append(f"context edge {self.context.edge!r} not one of {CONTEXT_EDGES}")
        waveform = [i for i in self.inputs if i.name == WAVEFORM_INPUT]
        if not waveform:
            problems.append(f"no {WAVEFORM_INPUT!r} input")
        elif isinstance(waveform[0].shape[-1], int) and not problems and waveform[0].shape[-1] != self.input_samples:
            problems.append(
                f"{WAVEFORM_INPUT!r} input takes {waveform[0].shape[-1]} samples; context {self.context.before} + "
                f"window {self.window_samples} + context {self.context.after} = {self.input_samples}"
            )
        if not any(o.name == EMBEDDING_OUTPUT for o in self.outputs):
            problems.append(f"no {EMBEDDING_OUTPUT!r} output")
        if self.probe and (self.probe.get("file") not in self.files and self.files):
            problems.append(f"probe file {self.probe.get('file')!r} has no checksum in the manifest")
        if self.padding.mode == "frames" and not self.takes_num_samples:
            problems.append(f"padding mode 'frames' needs a {NUM_SAMPLES_INPUT!r} input")
        if self.text is not None:
            problems.extend(self.text.problems(self.embedding_dim, self.files))
        if self.has_frames != (self.frame_grid is not None):
            problems.append(f"a {FRAMES_OUTPUT!r} output and a frame_grid go together")
        elif self.frame_grid is not None:
            grid = self.frame_grid
            if grid.hop_samples <= 0 or grid.receptive_samples <= 0 or grid.count <= 0:
                problems.append(f"frame_grid {grid} must be positive")
            elif grid.count * grid.hop_samples > self.window_samples + grid.hop_samples:
                problems.append(f"frame_grid: {grid.count} frames of {grid.hop_samples} samples overrun the window")
        if problems:
            raise BundleError("invalid manifest: " + "; ".join(problems))


@dataclass(frozen=True)
class Bundle:
    """A bundle on disk, its manifest read and (optionally) its checksums verified."""

    path: Path
    manifest: Manifest
    labels: list[str]

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def model_path(self) -> Path:
        return self.path / self.manifest.model_file

    @property
    def text_model_path(self) -> Path | None:
        text = self.manifest.text
        return None if text is None else self.path / text.model_file

    @property
    def tokenizer_path(self) -> Path | None:
        text = self.manifest.text
        return None if text is None else self.path / text.tokenizer_file


def sha256_file(path: str | os.PathLike[str], chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def read_labels(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    if not rows or rows[0][:2] != ["index", "label"]:
        raise BundleError(f"{path}: labels file must start with the header 'index,label'")
    labels = []
    for expected, row in enumerate(rows[1:]):
        if len(row) != 2 or not row[0].isdigit() or int(row[0]) != expected:
            raise BundleError(f"{path}: row {expected + 2} must be '{expected},<label>', got {row!r}")
        labels.append(row[1])
    return labels


def labels_csv(labels: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["index", "label"])
    for index, label in enumerate(labels):
        writer.writerow([index, label])
    return buffer.getvalue()


def load(path: str | os.PathLike[str], verify: bool = True) -> Bundle:
    """Read a bundle directory; with verify, refuse it unless every file's sha256 matches."""
    root = Path(path)
    manifest_path = root / MANIFEST_FILE
    if not manifest_path.is_file():
        raise BundleError(f"{root}: not a bundle (no {MANIFEST_FILE})")
    try:
        data = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise BundleError(f"{manifest_path}: unreadable manifest: {error}") from error
    manifest = Manifest.from_json(data)
    if manifest.model_file not in manifest.files:
        raise BundleError(f"{root}: manifest lists no checksum for {manifest.model_file}")
    if verify:
        verify_files(root, manifest)
    labels: list[str] = []
    if manifest.labels_file:
        labels = read_labels(root / manifest.labels_file)
        if len(labels) != manifest.num_labels:
            raise BundleError(
                f"{root}: {len(labels)} labels in {manifest.labels_file}, manifest says {manifest.num_labels}"
            )
    return Bundle(path=root, manifest=manifest, labels=labels)


def verify_files(root: Path, manifest: Manifest) -> None:
    for relative, expected in manifest.files.items():
        file_path = root / relative
        if not file_path.is_file():
            raise BundleError(f"{root}: {relative} is missing")
        actual = sha256_file(file_path)
        if actual != expected:
            raise BundleError(
                f"{root}: checksum mismatch for {relative} (manifest {expected[:12]}..., file {actual[:12]}...)"
            )


def write(root: str | os.PathLike[str], manifest: Manifest, labels: list[str]) -> Bundle:
    """Finish a bundle whose model file is already in `root`: write labels, checksums, manifest.

    The manifest is written last (through a temporary file), so a directory with a manifest is a
    complete bundle.
    """
    root_path = Path(root)
    if not (root_path / manifest.model_file).is_file():
        raise BundleError(f"{root_path}: write the model file before the manifest")
    if len(labels) != manifest.num_labels:
        raise BundleError(f"{len(labels)} labels given, manifest says {manifest.num_labels}")
    files: dict[str, str] = {}
    for name in sorted(p.name for p in root_path.iterdir() if p.is_file()):
        if name in (MANIFEST_FILE, LABELS_FILE) or name.startswith("."):
            continue
        files[name] = sha256_file(root_path / name)
    labels_file = None
    if labels:
        (root_path / LABELS_FILE).write_text(labels_csv(labels), encoding="utf-8")
        files[LABELS_FILE] = sha256_file(root_path / LABELS_FILE)
        labels_file = LABELS_FILE
    final = Manifest(**{**_shallow_fields(manifest), "files": files, "labels_file": labels_file})
    final.validate()
    temporary = root_path / (MANIFEST_FILE + ".tmp")
    temporary.write_text(json.dumps(final.to_json(), indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, root_path / MANIFEST_FILE)
    return Bundle(path=root_path, manifest=final, labels=list(labels))


def _shallow_fields(manifest: Manifest) -> dict[str, Any]:
    return {name: getattr(manifest, name) for name in manifest.__dataclass_fields__}


# -- finding bundles by name -------------------------------------------------------------------
DEFAULT_MODEL = "yamnet"  # what `earshot serve` with no --bundle serves (also under the name "default")
ALIASES = {"default": DEFAULT_MODEL}


def cache_bundles_dir(cache_dir: str | os.PathLike[str]) -> Path:
    return Path(cache_dir) / "bundles"


def resolve(reference: str, cache_dir: str | os.PathLike[str]) -> Path:
    """A bundle reference is a directory holding a manifest, or a name in the cache."""
    as_path = Path(reference).expanduser()
    if (as_path / MANIFEST_FILE).is_file():
        return as_path
    if _NAME_PATTERN.match(reference):
        cached = cache_bundles_dir(cache_dir) / ALIASES.get(reference, reference)
        if (cached / MANIFEST_FILE).is_file():
            return cached
    raise BundleError(
        f"no bundle {reference!r}: not a bundle directory, and not a name in {cache_bundles_dir(cache_dir)}"
    )


def list_cached(cache_dir: str | os.PathLike[str]) -> list[Path]:
    root = cache_bundles_dir(cache_dir)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if (p / MANIFEST_FILE).is_file())
