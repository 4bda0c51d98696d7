"""CLAP checkpoints in Hugging Face format (transformers ClapModel: laion/clap-htsat-unfused, ...).

A `save_pretrained` directory (config.json, model.safetensors, preprocessor_config.json and the
tokenizer files), or a hub id fetched with huggingface_hub (needs internet the first time). The
weights are loaded by transformers' own ClapModel.from_pretrained; any missing, unexpected or
mis-shaped key is a CheckpointError here (transformers only warns).

What is read from where:
- config.json: model_type "clap"; audio_config.enable_fusion must be false (see audio.py);
  num_mel_bins, spec_size; logit_scale_a comes with the weights.
- preprocessor_config.json (ClapFeatureExtractor): sampling_rate, max_length_s (the window),
  fft_window_size, hop_length, feature_size, frequency_min / max, truncation (only "rand_trunc":
  Slaney mel with Slaney norm; "fusion" extractors use HTK mel for fused models), padding, top_db.
  Without the file, laion/clap-htsat-unfused's values (CLAP_UNFUSED_FRONTEND).
- With labels: the tokenizer in the directory embeds `prompt.format(label)` for each label through
  the text tower and text projection, once, at export.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from earshot.models.checkpoints.io import CheckpointError, read_json, sha256_file
from earshot.models.clap.audio import ClapAudioTower
from earshot.models.clap.config import CLAP_UNFUSED_FRONTEND, ClapFrontendConfig
from earshot.models.clap.frontend import ClapFrontend
from earshot.models.waveform_model import WaveformModel

FORMAT = "hf-transformers-clap"
MODEL_TYPE = "clap"
DEFAULT_PROMPT = "This is a sound of {}."  # LAION CLAP's zero-shot template
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
HUB_PATTERNS = (
    "config.json",
    "preprocessor_config.json",
    "*.safetensors",
    "model.safetensors.index.json",
    "tokenizer*",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
)


@dataclass(frozen=True)
class ClapCheckpoint:
    frontend: ClapFrontendConfig
    model: torch.nn.Module  # transformers' ClapModel, eval mode
    labels: list[str]
    prompts: list[str]
    text_embeddings: torch.Tensor | None  # (C, P) L2-normalised, None without labels
    logit_scale: float  # exp(logit_scale_a)
    weights_path: Path
    format: str = FORMAT

    @property
    def embedding_dim(self) -> int:
        return int(self.model.config.projection_dim)

    def build(self) -> WaveformModel:
        weight = None if self.text_embeddings is None else self.logit_scale * self.text_embeddings
        tower = ClapAudioTower(self.model.audio_model, self.model.audio_projection, weight)
        return WaveformModel(ClapFrontend(self.frontend), tower).eval()

    def sha256(self) -> str:
        return sha256_file(self.weights_path)


def resolve_directory(reference: str | Path) -> Path:
    directory = Path(reference)
    if directory.exists():
        if not (directory / "config.json").is_file():
            raise CheckpointError(f"{directory}: no config.json; not a transformers save_pretrained directory")
        return directory
    if not re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", str(reference)):
        raise CheckpointError(f"{reference}: no such directory (and not a hub id like 'owner/name')")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(str(reference), allow_patterns=list(HUB_PATTERNS)))
    except Exception as error:  # offline, unknown repo, gated repo, ...
        raise CheckpointError(f"cannot fetch {reference!r} from the Hugging Face Hub: {error}") from error


def frontend_config(preprocessor: dict[str, Any] | None, num_mel_bins: int, where: str) -> ClapFrontendConfig:
    """The frontend ClapFeatureExtractor runs for this checkpoint (unfused: rand_trunc)."""
    if not preprocessor:
        config = CLAP_UNFUSED_FRONTEND
    else:
        truncation = preprocessor.get("truncation", "fusion")
        if truncation != "rand_trunc":
            raise CheckpointError(
                f"{where}: truncation {truncation!r}: only unfused CLAP ('rand_trunc', Slaney mel) is supported"
            )
        sample_rate = int(preprocessor.get("sampling_rate", 48000))
        top_db = preprocessor.get("top_db")
        try:
            config = ClapFrontendConfig(
                sample_rate=sample_rate,
                window_samples=int(round(float(preprocessor.get("max_length_s", 10)) * sample_rate)),
                n_fft=int(preprocessor.get("fft_window_size", 1024)),
                hop_length=int(preprocessor.get("hop_length", 480)),
                num_mel_bins=int(preprocessor.get("feature_size", 64)),
                f_min=float(preprocessor.get("frequency_min", 0.0)),
                f_max=float(preprocessor.get("frequency_max", 14000.0)),
                mel_scale="slaney",
                mel_norm="slaney",
                padding=str(preprocessor.get("padding", "repeatpad")),
                power_floor=CLAP_UNFUSED_FRONTEND.power_floor,
                top_db=None if top_db is None else float(top_db),
            )
            config.validate()
        except (TypeError, ValueError) as error:
            raise CheckpointError(f"{where}: {error}") from error
    if config.num_mel_bins != num_mel_bins:
        raise CheckpointError(f"{where}: {config.num_mel_bins} mel bins, the model takes {num_mel_bins}")
    return config


def _weights_path(directory: Path) -> Path:
    for name in WEIGHT_FILES:
        if (directory / name).is_file():
            return directory / name
    raise CheckpointError(f"{directory}: no weights file (looked for {', '.join(WEIGHT_FILES)})")


def load_model(directory: Path) -> torch.nn.Module:
    """transformers' ClapModel, every key present and used."""
    from transformers import ClapModel

    try:
        model, info = ClapModel.from_pretrained(str(directory), output_loading_info=True)
    except Exception as error:  # bad config values, unreadable weights, size mismatches
        raise CheckpointError(f"{directory}: transformers cannot load this CLAP checkpoint: {error}") from error
    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        keys = list(info.get(kind) or [])
        if keys:
            raise CheckpointError(f"{directory}: {len(keys)} {kind.replace('_', ' ')}, e.g. {keys[0]!r}")
    return model.eval()


def embed_prompts(model: torch.nn.Module, directory: Path, prompts: list[str]) -> torch.Tensor:
    """(C, P) L2-normalised text embeddings of the prompts, through the checkpoint's own tokenizer."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(directory))
    except Exception as error:
        raise CheckpointError(f"{directory}: no usable tokenizer for the labels' prompts: {error}") from error
    tokens = tokenizer(prompts, padding=True, return_tensors="pt")
    with torch.no_grad():
        output = model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
    return output.pooler_output  # already normalised by get_text_features


def read_clap_checkpoint(
    reference: str | Path, labels: list[str] | None = None, prompt: str | None = None
) -> ClapCheckpoint:
    directory = resolve_directory(reference)
    config = read_json(directory / "config.json")
    where = str(directory / "config.json")
    if config.get("model_type") != MODEL_TYPE:
        raise CheckpointError(f"{where}: model_type {config.get('model_type')!r} is not {MODEL_TYPE!r}")
    audio = config.get("audio_config") or {}
    if audio.get("enable_fusion", False):
        raise CheckpointError(f"{where}: a fused CLAP (audio_config.enable_fusion) is not supported; use an unfused one")
    preprocessor_file = directory / "preprocessor_config.json"
    preprocessor = read_json(preprocessor_file) if preprocessor_file.is_file() else None
    frontend = frontend_config(preprocessor, int(audio.get("num_mel_bins", 64)), str(preprocessor_file))
    spec_size = int(audio.get("spec_size", 256))
    freq_ratio = spec_size // int(audio.get("num_mel_bins", 64))
    if frontend.num_frames > spec_size * freq_ratio:
        raise CheckpointError(
            f"{preprocessor_file}: {frontend.num_frames} frames per window, more than the model's {spec_size * freq_ratio}"
        )
    weights_path = _weights_path(directory)
    model = load_model(directory)
    prompt = DEFAULT_PROMPT if prompt is None else prompt
    labels = list(labels or [])
    prompts: list[str] = []
    text = None
    if labels:
        if prompt.count("{}") != 1:
            raise CheckpointError(f"prompt {prompt!r} must contain '{{}}' exactly once (where the label goes)")
        prompts = [prompt.format(label) for label in labels]
        text = embed_prompts(model, directory, prompts)
    logit_scale = math.exp(float(model.logit_scale_a.detach()))
    return ClapCheckpoint(
        frontend=frontend,
        model=model,
        labels=labels,
        prompts=prompts,
        text_embeddings=text,
        logit_scale=logit_scale,
        weights_path=weights_path,
    )


def with_window(checkpoint: ClapCheckpoint, window_seconds: float) -> ClapCheckpoint:
    """The same checkpoint with shorter windows (at most the model's max_length_s)."""
    samples = int(round(window_seconds * checkpoint.frontend.sample_rate))
    if not 0 < samples <= checkpoint.frontend.window_samples:
        raise CheckpointError(
            f"window of {window_seconds} s: CLAP takes up to {checkpoint.frontend.window_samples / checkpoint.frontend.sample_rate} s"
        )
    frontend = replace(checkpoint.frontend, window_samples=samples)
    frontend.validate()
    return replace(checkpoint, frontend=frontend)
