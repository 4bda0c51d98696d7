"""CLAP checkpoints that earshot refuses, each with a message that names the problem."""

from __future__ import annotations

import json

import pytest
import torch

from earshot_models.checkpoints import CheckpointError
from earshot_models.checkpoints.clap import read_clap_checkpoint
from tests.models.clap_fixtures import make_clap_dir


@pytest.fixture(scope="module")
def clap_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("clap") / "clap-tiny"
    make_clap_dir(directory, seed=1)
    return directory


def edit_json(path, **changes):
    data = json.loads(path.read_text())
    for key, value in changes.items():
        target = data
        *parents, leaf = key.split(".")
        for parent in parents:
            target = target[parent]
        target[leaf] = value
    path.write_text(json.dumps(data))


def copy_dir(source, destination):
    import shutil

    shutil.copytree(source, destination)
    return destination


def test_fused_models_are_refused(clap_dir, tmp_path):
    directory = copy_dir(clap_dir, tmp_path / "fused")
    edit_json(directory / "config.json", **{"audio_config.enable_fusion": True})
    with pytest.raises(CheckpointError, match="fused CLAP"):
        read_clap_checkpoint(directory)


def test_fusion_extractors_are_refused(clap_dir, tmp_path):
    directory = copy_dir(clap_dir, tmp_path / "fusion-extractor")
    edit_json(directory / "preprocessor_config.json", truncation="fusion")
    with pytest.raises(CheckpointError, match="truncation 'fusion'"):
        read_clap_checkpoint(directory)


def test_other_model_types_are_refused(clap_dir, tmp_path):
    directory = copy_dir(clap_dir, tmp_path / "not-clap")
    edit_json(directory / "config.json", model_type="audio-spectrogram-transformer")
    with pytest.raises(CheckpointError, match="is not 'clap'"):
        read_clap_checkpoint(directory)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda state: state.pop("audio_projection.linear1.weight"),
            r"missing key 'audio_projection\.linear1\.weight' \(needed for projection\.fc1\.weight\)",
        ),
        (
            lambda state: state.__setitem__(
                "audio_model.audio_encoder.layers.1.blocks.0.attention.self.key.weight", torch.zeros(32, 16)
            ),
            r"'audio_model\.audio_encoder\.layers\.1\.blocks\.0\.attention\.self\.key\.weight' has shape "
            r"\[32, 16\], expected \[32, 32\]",
        ),
        (
            lambda state: state.__setitem__("audio_model.audio_encoder.head.weight", torch.zeros(3)),
            r"unexpected key 'audio_model\.audio_encoder\.head\.weight'",
        ),
        (lambda state: state.pop("logit_scale_a"), r"missing key 'logit_scale_a'"),
    ],
)
def test_bad_weights_are_named(clap_dir, tmp_path, edit, message):
    from safetensors.torch import load_file, save_file

    directory = copy_dir(clap_dir, tmp_path / "edited")
    state = load_file(directory / "model.safetensors")
    edit(state)
    save_file(state, directory / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=message):
        read_clap_checkpoint(directory)


def test_prompts_need_one_placeholder_and_a_tokenizer(clap_dir, tmp_path):
    with pytest.raises(CheckpointError, match="must contain '{}' exactly once"):
        read_clap_checkpoint(clap_dir, labels=["dog"], prompt="a dog barking")
    directory = copy_dir(clap_dir, tmp_path / "no-tokenizer")
    for path in directory.glob("tokenizer*"):
        path.unlink()
    assert read_clap_checkpoint(directory).labels == []  # embeddings need no tokenizer
    with pytest.raises(CheckpointError, match="no usable tokenizer"):
        read_clap_checkpoint(directory, labels=["dog"])
    with pytest.raises(CheckpointError, match="no such directory"):
        read_clap_checkpoint(tmp_path / "absent")
