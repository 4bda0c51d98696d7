"""Reading checkpoint files into flat {key: tensor} dicts, with clear errors for bad files."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

# A save_pretrained directory's weights, in the order they are looked for
HF_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or whose keys or shapes do not fit the model it claims to be."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"cannot read {path}: {error}") from error
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise CheckpointError(f"checkpoint file {path} does not exist")
    try:
        return load_file(str(path), device="cpu")
    except Exception as error:  # safetensors raises its own error types for bad headers and short files
        raise CheckpointError(f"{path} is not a readable safetensors file (corrupt or truncated?): {error}") from error


def load_torch_file(path: Path) -> Any:
    """Whatever a torch.save file holds, read with weights_only=True (no code from the file runs)."""
    if not Path(path).is_file():
        raise CheckpointError(f"checkpoint file {path} does not exist")
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:  # UnpicklingError, EOFError, RuntimeError from the zip reader, ...
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint (corrupt, truncated, or not a torch.save file): {error}"
        ) from error


def read_torch(path: Path) -> dict[str, torch.Tensor]:
    """A torch.save'd state dict, read with weights_only=True (no code from the file runs).
    A {"state_dict": ...} or {"model": ...} wrapper is unwrapped."""
    data = load_torch_file(path)
    if isinstance(data, Mapping) and len(data) == 1:
        (only_key,) = data.keys()
        if only_key in ("state_dict", "model") and isinstance(data[only_key], Mapping):
            data = data[only_key]
    if not isinstance(data, Mapping):
        raise CheckpointError(
            f"{path}: expected a state dict (a mapping of names to tensors), got {type(data).__name__}"
        )
    state = {}
    for key, value in data.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{path}: entry {key!r} is not a named tensor; expected a state dict")
        state[key] = value
    return state


def strip_data_parallel(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state` without the `module.` prefix torch.nn.DataParallel puts on every key (when all have it)."""
    if state and all(key.startswith("module.") for key in state):
        return {key[len("module.") :]: value for key, value in state.items()}
    return state


def read_hf_weights(directory: Path) -> tuple[dict[str, torch.Tensor], Path]:
    """Every tensor of a transformers save_pretrained directory (one safetensors file, sharded
    safetensors, or pytorch_model.bin), and the file whose sha256 identifies the checkpoint."""
    safetensors_file, index_file, torch_file = (directory / name for name in HF_WEIGHT_FILES)
    if safetensors_file.is_file():
        return read_safetensors(safetensors_file), safetensors_file
    if index_file.is_file():
        weight_map = read_json(index_file).get("weight_map")
        if not isinstance(weight_map, dict):
            raise CheckpointError(f"{index_file}: no weight_map")
        state: dict[str, torch.Tensor] = {}
        for shard in sorted(set(weight_map.values())):
            state.update(read_safetensors(directory / shard))
        return state, index_file
    if torch_file.is_file():
        return read_torch(torch_file), torch_file
    raise CheckpointError(f"{directory}: no weights file (looked for {', '.join(HF_WEIGHT_FILES)})")
