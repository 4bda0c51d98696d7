"""The waveform speech encoders (wav2vec 2.0, HuBERT, data2vec-audio, UniSpeech-SAT, WavLM) against
transformers: tiny random checkpoints of every family at non-default configurations, saved with
save_pretrained and read by our converter, on real clips cut to 2 s. The reference is transformers'
model fed by its own Wav2Vec2FeatureExtractor; ours takes the raw waveform."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from earshot_models.checkpoints.io import CheckpointError
from earshot_models.checkpoints.speech import read_speech_checkpoint
from earshot_models.speech import SpeechEmbeddingHead
from earshot_models.speech.rel_pos import RelativePositionBias
from tests.models.clap_fixtures import randomise
from tests.models.variant_references import fit, read_clip

SAMPLE_RATE = 16000
WINDOW = 2 * SAMPLE_RATE  # 2 s
CLIP_NAMES = ("speech_spanish_16s.ogg", "music_piano.flac", "speech_greek_20s.ogg")
ATOL = 1e-4
# Not any family's defaults: 3 narrow conv layers (hop 40 samples: 799 frames in 2 s), 3 layers, 2 heads.
TINY = dict(
    hidden_size=32,
    num_hidden_layers=3,
    num_attention_heads=2,
    intermediate_size=64,
    conv_dim=(16, 24, 32),
    conv_kernel=(10, 5, 3),
    conv_stride=(5, 4, 2),
    num_conv_pos_embedding_groups=4,
    layer_norm_eps=1e-6,  # not the default: the encoder's LayerNorms take it, the conv stack's keep 1e-5
)


@dataclass(frozen=True)
class Variant:
    name: str
    config_class: str  # transformers' config class
    model_class: str  # transformers' base model class
    overrides: dict
    do_normalize: bool


VARIANTS = (
    Variant(
        "wav2vec2-group-postln",
        "Wav2Vec2Config",
        "Wav2Vec2Model",
        dict(feat_extract_norm="group", do_stable_layer_norm=False, conv_bias=False, num_conv_pos_embeddings=16),
        False,
    ),
    Variant(
        "wav2vec2-layer-stable",
        "Wav2Vec2Config",
        "Wav2Vec2Model",
        dict(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True, num_conv_pos_embeddings=9),
        True,
    ),
    Variant(
        "hubert-group-no-projection-norm",
        "HubertConfig",
        "HubertModel",
        dict(feat_extract_norm="group", feat_proj_layer_norm=False, conv_bias=True, num_conv_pos_embeddings=15),
        True,
    ),
    Variant(
        "hubert-layer-stable",
        "HubertConfig",
        "HubertModel",
        dict(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=False, num_conv_pos_embeddings=16),
        True,
    ),
    Variant(
        "data2vec-audio",
        "Data2VecAudioConfig",
        "Data2VecAudioModel",
        dict(conv_bias=True, num_conv_pos_embeddings=3, conv_pos_kernel_size=6),
        True,
    ),
    Variant(
        "unispeech-sat-layer-stable",
        "UniSpeechSatConfig",
        "UniSpeechSatModel",
        dict(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True, num_conv_pos_embeddings=12),
        True,
    ),
    Variant(
        "wavlm-group-postln",
        "WavLMConfig",
        "WavLMModel",
        # 64 buckets up to 90 frames: no bucket boundary lands within float rounding of an integer
        dict(feat_extract_norm="group", conv_bias=False, num_conv_pos_embeddings=16, num_buckets=64, max_bucket_distance=90),
        True,
    ),
    Variant(
        "wavlm-layer-stable",
        "WavLMConfig",
        "WavLMModel",
        dict(
            feat_extract_norm="layer",
            do_stable_layer_norm=True,
            conv_bias=True,
            num_conv_pos_embeddings=9,
            num_buckets=48,
            max_bucket_distance=70,
        ),
        True,
    ),
)
BY_NAME = {variant.name: variant for variant in VARIANTS}


def make_hf_dir(directory: Path, variant: Variant, seed: int, model_class: str | None = None, **extra) -> Any:
    """A save_pretrained directory (config, safetensors, preprocessor config) of a random model; returns it (eval)."""
    import transformers

    config = getattr(transformers, variant.config_class)(**{**TINY, **variant.overrides, **extra})
    model = getattr(transformers, model_class or variant.model_class)(config)
    randomise(model, seed)
    model.eval()
    model.save_pretrained(directory)
    feature_extractor(variant.do_normalize).save_pretrained(directory)
    model.config._attn_implementation = "eager"  # the plain-math reference
    return model


def feature_extractor(do_normalize: bool):
    from transformers import Wav2Vec2FeatureExtractor

    return Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=SAMPLE_RATE, padding_value=0.0, do_normalize=do_normalize, return_attention_mask=False
    )


def hf_hidden_states(model: Any, waves: np.ndarray, do_normalize: bool) -> list[np.ndarray]:
    """transformers' hidden states 0..L-1 and last_hidden_state (our entry L), from its feature extractor's input."""
    inputs = feature_extractor(do_normalize)(list(waves), sampling_rate=SAMPLE_RATE, return_tensors="pt")
    with torch.no_grad():
        out = model(inputs.input_values, output_hidden_states=True)
    hidden = [state.numpy() for state in out.hidden_states]
    assert len(hidden) == model.config.num_hidden_layers + 1
    if not getattr(model.config, "do_stable_layer_norm", False):  # post-LN: the last entry is the output itself
        np.testing.assert_array_equal(hidden[-1], out.last_hidden_state.numpy())
    return [*hidden[:-1], out.last_hidden_state.numpy()]


def max_diff(a, b) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).max())


@pytest.fixture(scope="module")
def waves(audio_dir: Path) -> np.ndarray:
    """(3, 32000): three real clips cut to 2 s at 16 kHz."""
    return np.stack([fit(read_clip(audio_dir / name, SAMPLE_RATE), WINDOW) for name in CLIP_NAMES])


@dataclass
class Case:
    variant: Variant
    directory: Path
    reference: list[np.ndarray]  # transformers' hidden states, entry L = last_hidden_state


@pytest.fixture(scope="module", params=VARIANTS, ids=[variant.name for variant in VARIANTS])
def case(request, tmp_path_factory, waves) -> Case:
    variant: Variant = request.param
    directory = tmp_path_factory.mktemp(variant.name)
    model = make_hf_dir(directory, variant, seed=VARIANTS.index(variant))
    return Case(variant, directory, hf_hidden_states(model, waves, variant.do_normalize))


def test_every_hidden_state_matches_transformers(case, waves):
    checkpoint = read_speech_checkpoint(case.directory)
    assert case.variant.name.startswith(checkpoint.family)
    encoder = checkpoint.build_encoder()
    with torch.no_grad():
        ours = encoder(torch.from_numpy(waves)).numpy()  # (L + 1, B, T, D)
    assert ours.shape == (len(case.reference), 3, checkpoint.config.num_frames(WINDOW), 32)
    diffs = [max_diff(mine, theirs) for mine, theirs in zip(ours, case.reference, strict=True)]
    scale = max(float(np.abs(state).max()) for state in case.reference)
    print(f"{case.variant.name}: max |ours - transformers| per hidden state {[f'{d:.2e}' for d in diffs]} (max |value| {scale:.1f})")
    assert max(diffs) <= ATOL


@pytest.mark.parametrize("layer", [3, 1, "mean"])
def test_pooled_embedding_and_frames_of_a_layer(case, waves, layer):
    model = read_speech_checkpoint(case.directory).build(layer)
    with torch.no_grad():
        embedding, frames = model(torch.from_numpy(waves))
    layers = case.reference[1:] if layer == "mean" else [case.reference[layer]]
    expected_frames = np.mean(np.stack(layers), axis=0)  # (B, T, D)
    expected_embedding = np.mean([state.mean(axis=1) for state in layers], axis=0)  # mean of the per-layer frame means
    assert embedding.shape == (3, 32) and frames.shape == expected_frames.shape
    print(f"{case.variant.name} layer {layer}: embedding {max_diff(embedding, expected_embedding):.2e}, frames {max_diff(frames, expected_frames):.2e}")
    np.testing.assert_allclose(frames.numpy(), expected_frames, rtol=0, atol=ATOL)
    np.testing.assert_allclose(embedding.numpy(), expected_embedding, rtol=0, atol=ATOL)


def test_converted_config_follows_config_json(case):
    config = read_speech_checkpoint(case.directory).config
    overrides = case.variant.overrides
    assert config.normalize == case.variant.do_normalize
    assert config.conv_bias == overrides["conv_bias"]
    assert config.stable_layer_norm == overrides.get("do_stable_layer_norm", False)
    assert config.conv_norm == overrides.get("feat_extract_norm", "layer")
    assert config.relative_position == config.family.startswith("wavlm")
    assert config.hop_samples == 40 and config.receptive_field == 10 + (5 - 1) * 5 + (3 - 1) * 5 * 4


# -- checkpoints with heads, and what is refused ----------------------------------------------------------


@pytest.mark.parametrize(
    ("variant_name", "head_class"),
    [("wav2vec2-layer-stable", "Wav2Vec2ForPreTraining"), ("wavlm-group-postln", "WavLMForCTC")],
)
def test_head_checkpoints_load_their_base_model(tmp_path, waves, variant_name, head_class):
    """A model with a head: the base model under its prefix is used; quantizer / project_q / lm_head ignored."""
    variant = BY_NAME[variant_name]
    model = make_hf_dir(tmp_path, variant, seed=11, model_class=head_class, vocab_size=12)
    keys = load_file(str(tmp_path / "model.safetensors")).keys()
    assert any(key.startswith(("quantizer.", "lm_head.")) for key in keys)
    base = model.wavlm if hasattr(model, "wavlm") else model.wav2vec2
    reference = hf_hidden_states(base, waves[:1], variant.do_normalize)
    with torch.no_grad():
        ours = read_speech_checkpoint(tmp_path).build_encoder()(torch.from_numpy(waves[:1])).numpy()
    assert max(max_diff(mine, theirs) for mine, theirs in zip(ours, reference, strict=True)) <= ATOL


@pytest.mark.parametrize(
    ("variant_name", "head_class", "extra"),
    [
        ("wav2vec2-group-postln", "Wav2Vec2ForSequenceClassification", dict(use_weighted_layer_sum=True)),
        ("unispeech-sat-layer-stable", "UniSpeechSatForPreTraining", {}),
        ("hubert-layer-stable", "HubertForCTC", dict(vocab_size=12)),
        ("data2vec-audio", "Data2VecAudioForAudioFrameClassification", dict(num_labels=3)),
        ("wavlm-layer-stable", "WavLMForXVector", dict(tdnn_dim=(8, 8, 8, 8, 16), xvector_output_dim=8)),
    ],
)
def test_every_head_of_every_family_is_ignored_by_name(tmp_path, variant_name, head_class, extra):
    model = make_hf_dir(tmp_path, BY_NAME[variant_name], seed=12, model_class=head_class, **extra)
    base = getattr(model, model.base_model_prefix)
    checkpoint = read_speech_checkpoint(tmp_path)
    ours = read_speech_checkpoint(_bare_copy(base, tmp_path / "bare", BY_NAME[variant_name])).state_dict
    assert checkpoint.state_dict.keys() == ours.keys()
    for key, value in ours.items():
        torch.testing.assert_close(checkpoint.state_dict[key], value, rtol=0, atol=0)


def _bare_copy(base: Any, directory: Path, variant: Variant) -> Path:
    base.save_pretrained(directory)
    feature_extractor(variant.do_normalize).save_pretrained(directory)
    return directory


def test_legacy_weight_norm_names_are_read(tmp_path):
    make_hf_dir(tmp_path, BY_NAME["hubert-layer-stable"], seed=13)
    expected = read_speech_checkpoint(tmp_path).state_dict
    conv = "encoder.pos_conv_embed.conv"

    def rename(state):
        state[f"{conv}.weight_g"] = state.pop(f"{conv}.parametrizations.weight.original0")
        state[f"{conv}.weight_v"] = state.pop(f"{conv}.parametrizations.weight.original1")

    _edit_weights(tmp_path, rename)
    converted = read_speech_checkpoint(tmp_path).state_dict
    torch.testing.assert_close(converted, expected, rtol=0, atol=0)


@pytest.fixture
def small_dir(tmp_path) -> Path:
    make_hf_dir(tmp_path, BY_NAME["wavlm-layer-stable"], seed=3)
    return tmp_path


def _edit_weights(directory: Path, edit) -> None:
    path = directory / "model.safetensors"
    state = dict(load_file(str(path)))
    edit(state)
    save_file(state, str(path), metadata={"format": "pt"})


def _edit_config(directory: Path, name: str = "config.json", **changes) -> None:
    path = directory / name
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_a_missing_key_is_refused(small_dir):
    _edit_weights(small_dir, lambda state: state.pop("encoder.layers.1.attention.gru_rel_pos_const"))
    with pytest.raises(CheckpointError, match=r"missing key 'encoder\.layers\.1\.attention\.gru_rel_pos_const'"):
        read_speech_checkpoint(small_dir)


def test_a_missing_half_of_the_weight_norm_is_refused(small_dir):
    _edit_weights(small_dir, lambda state: state.pop("encoder.pos_conv_embed.conv.parametrizations.weight.original0"))
    with pytest.raises(CheckpointError, match=r"missing key 'encoder\.pos_conv_embed\.conv\.parametrizations\.weight\.original0'"):
        read_speech_checkpoint(small_dir)


def test_an_unexpected_key_is_refused(small_dir):
    _edit_weights(small_dir, lambda state: state.update({"encoder.layers.1.attention.rel_attn_embed.weight": torch.zeros(48, 2)}))
    with pytest.raises(CheckpointError, match=r"unexpected key 'encoder\.layers\.1\.attention\.rel_attn_embed\.weight'"):
        read_speech_checkpoint(small_dir)


def test_a_shape_that_does_not_fit_is_refused(small_dir):
    _edit_weights(small_dir, lambda state: state.update({"feature_projection.projection.weight": torch.zeros(32, 31)}))
    with pytest.raises(CheckpointError, match=r"'feature_projection\.projection\.weight' has shape \[32, 31\], expected \[32, 32\]"):
        read_speech_checkpoint(small_dir)


def test_masked_spec_embed_is_ignored_and_head_names_are_not_ignored_without_a_prefix(small_dir):
    assert "masked_spec_embed" in load_file(str(small_dir / "model.safetensors"))
    read_speech_checkpoint(small_dir)  # ignored: SpecAugment's mask vector
    _edit_weights(small_dir, lambda state: state.update({"lm_head.weight": torch.zeros(4, 32)}))
    with pytest.raises(CheckpointError, match=r"unexpected key 'lm_head\.weight'"):  # a bare model has no head
        read_speech_checkpoint(small_dir)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (dict(model_type="wav2vec2-conformer"), r"model_type 'wav2vec2-conformer' is not a waveform speech encoder"),
        (dict(feat_extract_norm="batch"), r"feat_extract_norm 'batch' not supported"),
        (dict(hidden_act="relu"), r"hidden_act 'relu' not supported \(only exact 'gelu'\)"),
        (dict(feat_extract_activation="gelu_new"), r"feat_extract_activation 'gelu_new' not supported"),
        (dict(add_adapter=True), r"add_adapter=True is not supported"),
        (dict(adapter_attn_dim=16), r"adapter_attn_dim=16 is not supported"),
        (dict(conv_pos_batch_norm=True), r"conv_pos_batch_norm=True is not supported"),
        (dict(conv_kernel=[10, 5]), r"one entry per conv layer"),
        (dict(num_attention_heads=3), r"hidden_size 32 is not divisible by num_attention_heads 3"),
    ],
)
def test_unsupported_configs_are_refused(small_dir, changes, message):
    _edit_config(small_dir, **changes)
    with pytest.raises(CheckpointError, match=message):
        read_speech_checkpoint(small_dir)


def test_the_feature_extractor_decides_the_normalisation(small_dir):
    _edit_config(small_dir, "preprocessor_config.json", sampling_rate=8000)
    with pytest.raises(CheckpointError, match=r"sampling_rate 8000 not supported"):
        read_speech_checkpoint(small_dir)
    (small_dir / "preprocessor_config.json").unlink()
    with pytest.raises(CheckpointError, match=r"no preprocessor_config\.json.*pass normalize=True or False"):
        read_speech_checkpoint(small_dir)
    assert read_speech_checkpoint(small_dir, normalize=False).config.normalize is False


def test_the_head_takes_an_int_layer_or_mean():
    assert SpeechEmbeddingHead(12).layer == 12 and SpeechEmbeddingHead(12, "mean").depth == 12
    assert SpeechEmbeddingHead(12, 4).depth == 4
    for bad in (13, -1, "last", True):
        with pytest.raises(ValueError, match=r"layer must be an int in 0\.\.12 or 'mean'"):
            SpeechEmbeddingHead(12, bad)


@pytest.mark.parametrize(("num_buckets", "max_distance"), [(320, 800), (48, 70), (64, 90)])
def test_relative_position_buckets_are_transformers(num_buckets, max_distance):
    from transformers.models.wavlm.modeling_wavlm import WavLMAttention

    theirs = WavLMAttention(8, 2, num_buckets=num_buckets, max_distance=max_distance)
    ours = RelativePositionBias(num_buckets, max_distance, num_heads=2)
    frames = 1000  # 20 s at 50 frames/s: past max_distance
    position = torch.arange(frames)
    expected = theirs._relative_positions_bucket(position[None, :] - position[:, None])
    torch.testing.assert_close(ours.buckets(frames), expected, rtol=0, atol=0)


# -- ONNX ------------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript-based exporter, on purpose
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # F.group_norm's training-time batch check
@pytest.mark.parametrize("variant_name", ["wavlm-layer-stable", "data2vec-audio", "wav2vec2-group-postln"])
def test_exports_and_onnx_runtime_matches_torch(tmp_path, waves, variant_name):
    import onnxruntime

    make_hf_dir(tmp_path / "hf", BY_NAME[variant_name], seed=21)
    model = read_speech_checkpoint(tmp_path / "hf").build("mean")
    path = tmp_path / "model.onnx"
    names = ["waveform", "embedding", "frames"]
    torch.onnx.export(
        model,
        (torch.from_numpy(waves[:2]),),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=names[:1],
        output_names=names[1:],
        dynamic_axes={name: {0: "batch"} for name in names},
    )
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    embedding, frames = session.run(None, {"waveform": waves})  # another batch size
    with torch.no_grad():
        expected_embedding, expected_frames = model(torch.from_numpy(waves))
    print(f"{variant_name} onnx: embedding {max_diff(embedding, expected_embedding):.2e}, frames {max_diff(frames, expected_frames):.2e}")
    np.testing.assert_allclose(frames, expected_frames.numpy(), rtol=0, atol=ATOL)
    np.testing.assert_allclose(embedding, expected_embedding.numpy(), rtol=0, atol=ATOL)
