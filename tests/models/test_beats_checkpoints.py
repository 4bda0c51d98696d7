"""BEATs .pt -> our layout: a non-default configuration, weight-norm folding, and clear errors."""

from __future__ import annotations

import pytest
import torch

from earshot_models.checkpoints import CheckpointError
from earshot_models.checkpoints.beats import read_beats_checkpoint
from tests.models.beats_fixtures import NON_DEFAULT_CFG, beats_layout, golden_paths, write_beats_file

WINDOW_SECONDS = 3.0  # 298 frames -> 18 patches of 16 (288 frames) x 8 mel patches


@pytest.fixture
def non_default_file(tmp_path):
    return write_beats_file(tmp_path / "beats-non-default.pt", NON_DEFAULT_CFG, seed=3)


def test_non_default_configuration_round_trip(non_default_file):
    checkpoint = read_beats_checkpoint(non_default_file, WINDOW_SECONDS)
    config = checkpoint.encoder
    assert (config.depth, config.embed_dim, config.num_heads, config.ffn_dim) == (3, 48, 3, 80)
    assert (config.conv_pos, config.conv_pos_groups, config.num_buckets, config.max_distance) == (15, 4, 64, 100)
    assert not config.deep_norm and config.deep_norm_alpha == 1.0 and not config.gated_relative_position
    assert config.input_tdim == 288 and config.num_tokens == 18 * 8 and config.num_classes == 5
    assert checkpoint.fbank.window_samples == 287 * 160 + 400
    assert checkpoint.labels == [f"/m/{index:05d}" for index in range(5)]

    source = torch.load(non_default_file, weights_only=True)["model"]
    ours = checkpoint.build().encoder.state_dict()
    assert isinstance(checkpoint.build().encoder.proj, torch.nn.Identity)  # embed_dim == encoder_embed_dim
    for index in range(3):
        theirs = f"encoder.layers.{index}.self_attn."
        expected_qkv = torch.cat([source[f"{theirs}{name}_proj.weight"] for name in "qkv"])
        torch.testing.assert_close(ours[f"layers.{index}.attn.qkv.weight"], expected_qkv, rtol=0, atol=0)
        torch.testing.assert_close(ours[f"layers.{index}.mlp.fc2.bias"], source[f"encoder.layers.{index}.fc2.bias"])
    torch.testing.assert_close(
        ours["rel_pos.embedding.weight"], source["encoder.layers.0.self_attn.relative_attention_bias.weight"]
    )
    torch.testing.assert_close(ours["head.weight"], source["predictor.weight"])
    # The folded position conv weight is what torch's own weight norm (dim=2) computes from g and v.
    g, v = source["encoder.pos_conv.0.weight_g"], source["encoder.pos_conv.0.weight_v"]
    torch.testing.assert_close(ours["pos_conv.conv.weight"], torch._weight_norm(v, g, 2), rtol=1e-6, atol=1e-6)


def test_torch_parametrization_names_are_read_too(tmp_path, non_default_file):
    state = beats_layout(NON_DEFAULT_CFG, seed=3)
    state["encoder.pos_conv.0.parametrizations.weight.original0"] = state.pop("encoder.pos_conv.0.weight_g")
    state["encoder.pos_conv.0.parametrizations.weight.original1"] = state.pop("encoder.pos_conv.0.weight_v")
    renamed = write_beats_file(tmp_path / "renamed.pt", NON_DEFAULT_CFG, state=state)
    a = read_beats_checkpoint(renamed, WINDOW_SECONDS).state_dict["pos_conv.conv.weight"]
    b = read_beats_checkpoint(non_default_file, WINDOW_SECONDS).state_dict["pos_conv.conv.weight"]
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_golden_files_have_the_labels_of_their_label_dict(golden_dir):
    paths = golden_paths(golden_dir)
    assert read_beats_checkpoint(paths["pretrained"]).labels == []
    finetuned = read_beats_checkpoint(paths["finetuned"])
    assert finetuned.labels[:3] == ["Speech", "Music", "Bird"] and len(finetuned.labels) == 11
    assert finetuned.fbank.num_frames == 992 and finetuned.fbank.window_samples == 991 * 160 + 400  # 10 s default


def edited(tmp_path, edit, cfg=NON_DEFAULT_CFG):
    state = beats_layout(cfg, seed=3)
    cfg = dict(cfg)
    edit(state, cfg)
    return write_beats_file(tmp_path / "edited.pt", cfg, state=state)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s, c: s.pop("encoder.layers.2.fc1.weight"), r"missing key 'encoder\.layers\.2\.fc1\.weight'"),
        (lambda s, c: s.pop("encoder.pos_conv.0.weight_g"), r"missing key 'encoder\.pos_conv\.0\.weight_g'"),
        (
            lambda s, c: s.__setitem__("encoder.layers.1.self_attn.k_proj.weight", torch.zeros(48, 40)),
            r"'encoder\.layers\.1\.self_attn\.k_proj\.weight' has shape \[48, 40\], expected \[48, 48\]",
        ),
        (lambda s, c: s.__setitem__("encoder.extra.weight", torch.zeros(3)), r"unexpected key 'encoder\.extra\.weight'"),
        (
            lambda s, c: s["encoder.layers.2.self_attn.relative_attention_bias.weight"].add_(1.0),
            r"layers\.2\.self_attn\.relative_attention_bias\.weight differs from layer 0's table",
        ),
        (lambda s, c: c.__setitem__("layer_norm_first", True), r"pre-LN"),
        (lambda s, c: c.__setitem__("activation_fn", "relu"), r"activation_fn 'relu'"),
        (lambda s, c: c.__setitem__("finetuned_model", False), r"finetuned_model=False but the weights have"),
        (lambda s, c: c.__setitem__("encoder_attention_heads", 5), r"not divisible by num_heads 5"),
    ],
)
def test_bad_checkpoints_are_named(tmp_path, edit, message):
    with pytest.raises(CheckpointError, match=message):
        read_beats_checkpoint(edited(tmp_path, edit), WINDOW_SECONDS)


def test_files_that_are_not_beats_files(tmp_path, non_default_file):
    bare = tmp_path / "bare.pt"
    torch.save(beats_layout(NON_DEFAULT_CFG, seed=3), bare)
    with pytest.raises(CheckpointError, match="expected a BEATs file, a dict with 'cfg' and 'model'"):
        read_beats_checkpoint(bare)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(non_default_file.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        read_beats_checkpoint(truncated)
    with pytest.raises(CheckpointError, match="does not exist"):
        read_beats_checkpoint(tmp_path / "absent.pt")
    with pytest.raises(CheckpointError, match="shorter than one 16-frame patch"):
        read_beats_checkpoint(non_default_file, window_seconds=0.1)
