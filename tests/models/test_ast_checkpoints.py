"""The original AST .pth layout, and checkpoints that must be refused with a clear CheckpointError."""

from __future__ import annotations

import copy
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from earshot_models.checkpoints import CheckpointError
from earshot_models.checkpoints.ast import read_ast_pth, read_hf_checkpoint
from tests.models.ast_fixtures import NON_DEFAULT, original_ast_state_dict

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def tiny(make_hf_checkpoint):
    return make_hf_checkpoint(seed=5, **NON_DEFAULT)


@pytest.fixture(scope="module")
def pth_file(tiny, tmp_path_factory):
    path = tmp_path_factory.mktemp("pth") / "audioset_tiny.pth"
    torch.save(original_ast_state_dict(tiny[1]), path)
    return path


def read_tiny_pth(path, **kwargs):
    geometry = dict(fstride=12, tstride=8, input_fdim=64, input_tdim=300, num_heads=4)
    return read_ast_pth(path, **{**geometry, **kwargs})


def as_original_ast(model: torch.nn.Module) -> torch.nn.Module:
    """transformers' port uses LayerNorm eps 1e-12 everywhere; the original AST has timm's 1e-6 in
    the ViT and torch's default 1e-5 in mlp_head (it moves unit-scale logits by ~3e-5)."""
    original = copy.deepcopy(model)
    for name, module in original.named_modules():
        if isinstance(module, torch.nn.LayerNorm):
            module.eps = 1e-5 if name == "classifier.layernorm" else 1e-6
    return original


def test_original_pth_layout_gives_the_same_outputs(tiny, pth_file):
    reference = as_original_ast(tiny[1])
    checkpoint = read_tiny_pth(pth_file)
    assert checkpoint.labels == [f"class_{index}" for index in range(7)]
    assert (checkpoint.encoder.layer_norm_eps, checkpoint.encoder.head_layer_norm_eps) == (1e-6, 1e-5)
    features = torch.randn(3, 300, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected_embedding = reference.audio_spectrogram_transformer(features).pooler_output
        expected_logits = reference(features).logits
        embedding, logits = checkpoint.build().encoder(features)
    torch.testing.assert_close(logits, expected_logits, rtol=0, atol=TOLERANCE)
    torch.testing.assert_close(embedding, expected_embedding, rtol=0, atol=TOLERANCE)


def test_pth_labels_and_heads(pth_file):
    labels = [f"sound {index}" for index in range(7)]
    assert read_tiny_pth(pth_file, labels=labels).labels == labels
    with pytest.raises(CheckpointError, match="3 labels given for a head with 7 classes"):
        read_tiny_pth(pth_file, labels=labels[:3])
    assert read_tiny_pth(pth_file, num_heads=None).encoder.num_heads == 1  # embed_dim // 64


def test_pth_with_other_strides_names_the_position_table(pth_file):
    with pytest.raises(CheckpointError, match=r"'v\.pos_embed' has 182 positions, but fstride=10, tstride=10"):
        read_tiny_pth(pth_file, fstride=10, tstride=10)


def test_random_bytes_are_refused(tmp_path):
    path = tmp_path / "random.pth"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        read_ast_pth(path)
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError, match="model.safetensors is not a readable safetensors file"):
        read_hf_checkpoint(tmp_path)


def test_truncated_files_are_refused(tiny, pth_file, tmp_path):
    data = pth_file.read_bytes()
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated.pth is not a readable PyTorch checkpoint"):
        read_ast_pth(truncated)
    directory, _ = tiny
    for name in ("config.json",):
        (tmp_path / name).write_text((directory / name).read_text())
    weights = (directory / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(weights[: len(weights) - 1000])
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        read_hf_checkpoint(tmp_path)


def test_missing_key_is_named(tiny, pth_file, tmp_path):
    directory, _ = tiny
    missing = "audio_spectrogram_transformer.encoder.layer.1.attention.attention.key.weight"
    state = load_file(str(directory / "model.safetensors"))
    del state[missing]
    save_file(state, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text((directory / "config.json").read_text())
    with pytest.raises(CheckpointError, match=rf"missing key '{missing}' \(needed for blocks\.1\.attn\.qkv\.weight\)"):
        read_hf_checkpoint(tmp_path)

    state = torch.load(pth_file, weights_only=True)
    del state["module.v.blocks.0.mlp.fc2.bias"]
    torch.save(state, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match=r"missing key 'v\.blocks\.0\.mlp\.fc2\.bias'"):
        read_tiny_pth(tmp_path / "missing.pth")


def test_wrong_shape_is_named(tiny, pth_file, tmp_path):
    directory, _ = tiny
    state = load_file(str(directory / "model.safetensors"))
    state["classifier.layernorm.weight"] = torch.ones(65)
    save_file(state, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text((directory / "config.json").read_text())
    with pytest.raises(CheckpointError, match=r"key 'classifier\.layernorm\.weight' has shape \[65\], expected \[64\]"):
        read_hf_checkpoint(tmp_path)

    state = torch.load(pth_file, weights_only=True)
    state["module.v.blocks.1.attn.qkv.weight"] = torch.zeros(192, 32)
    torch.save(state, tmp_path / "shape.pth")
    with pytest.raises(
        CheckpointError, match=r"key 'v\.blocks\.1\.attn\.qkv\.weight' has shape \[192, 32\], expected \[192, 64\]"
    ):
        read_tiny_pth(tmp_path / "shape.pth")


def test_unexpected_key_is_named(pth_file, tmp_path):
    state = torch.load(pth_file, weights_only=True)
    state["module.v.blocks.0.attn.rel_pos"] = torch.zeros(3)
    torch.save(state, tmp_path / "extra.pth")
    with pytest.raises(CheckpointError, match=r"unexpected key 'v\.blocks\.0\.attn\.rel_pos'"):
        read_tiny_pth(tmp_path / "extra.pth")


def test_not_a_state_dict_and_not_a_directory(tmp_path):
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="expected a state dict"):
        read_ast_pth(tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="no config.json"):
        read_hf_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="does not exist"):
        read_ast_pth(tmp_path / "absent.pth")
    with pytest.raises(CheckpointError, match="no such directory"):
        read_hf_checkpoint(str(tmp_path / "absent"))
