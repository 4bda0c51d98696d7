"""transformers waveform speech checkpoints -> our SpeechEncoder: wav2vec 2.0, HuBERT, data2vec-audio,
UniSpeech-SAT, WavLM (config.json `model_type`: wav2vec2, hubert, data2vec-audio, unispeech-sat, wavlm).

A `save_pretrained` directory (config.json, weights as model.safetensors, sharded safetensors or
pytorch_model.bin, and preprocessor_config.json for `do_normalize`), or a hub id fetched with
huggingface_hub. The base model (`Wav2Vec2Model`, `HubertModel`, ...) has its keys bare; a model
with a head (`...ForCTC`, `...ForPreTraining`, `...ForSequenceClassification`, ...) has them under
the family's prefix (`wav2vec2.`, `hubert.`, `data2vec_audio.`, `unispeech_sat.`, `wavlm.`) and
the head beside it: the head keys are ignored, by name (HEAD_KEYS), and nothing else is.

Keys (theirs, after the prefix -> ours), nothing transposed:
  feature_extractor.conv_layers.N.conv.*            -> feature_encoder.conv_layers.N.conv.*
  feature_extractor.conv_layers.N.layer_norm.*      -> feature_encoder.conv_layers.N.norm.* (GroupNorm or LayerNorm)
  feature_projection.layer_norm.*, projection.*     -> projection.norm.*, projection.linear.*
  encoder.pos_conv_embed.conv.weight_g / weight_v   -> transformer.pos_conv.conv.weight, weight norm folded:
      weight = g * v / ||v||, the norm over dims (0, 1) for each kernel tap (weight_norm dim=2);
      torch's newer names (parametrizations.weight.original0 / original1) too, which transformers 5 saves
  encoder.pos_conv_embed.conv.bias                  -> transformer.pos_conv.conv.bias
  encoder.pos_conv_embed.layers.N.conv.*            -> transformer.pos_conv.layers.N.conv.* (data2vec-audio)
  encoder.layer_norm.*                              -> transformer.norm.*
  encoder.layers.N.attention.{q,k,v}_proj.*         -> transformer.layers.N.attn.qkv.* (concatenated, q k v)
  encoder.layers.N.attention.out_proj.*             -> transformer.layers.N.attn.proj.*
  encoder.layers.N.attention.gru_rel_pos_linear.*   -> transformer.layers.N.attn.gate.* (WavLM)
  encoder.layers.N.attention.gru_rel_pos_const      -> transformer.layers.N.attn.gate_const (WavLM)
  encoder.layers.0.attention.rel_attn_embed.weight  -> transformer.rel_pos.embedding.weight (WavLM: layer 0 only)
  encoder.layers.N.layer_norm.*, final_layer_norm.* -> transformer.layers.N.norm1.*, norm2.*
  encoder.layers.N.feed_forward.intermediate_dense.*, output_dense.* -> transformer.layers.N.mlp.fc1.*, fc2.*
Ignored: `masked_spec_embed` (SpecAugment's mask vector, used only in training) and the head keys.

Refused (CheckpointError): other model types, activations other than exact GELU, adapters
(add_adapter, adapter_attn_dim), HuBERT's batch-norm position conv (conv_pos_batch_norm), a
feature extractor that is not 16 kHz mono, and a directory without preprocessor_config.json unless
`normalize` is given.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from earshot_models.checkpoints.beats import fold_weight_norm
from earshot_models.checkpoints.hub import hub_snapshot
from earshot_models.checkpoints.io import HF_WEIGHT_FILES, CheckpointError, read_hf_weights, read_json, sha256_file
from earshot_models.checkpoints.mapping import Rule, convert_state_dict, module_shapes
from earshot_models.config import SAMPLE_RATE
from earshot_models.speech.config import CONV_NORMS, FAMILIES, SpeechEncoderConfig
from earshot_models.speech.model import SpeechEmbeddingHead, SpeechEmbeddingModel, SpeechEncoder

FORMAT = "hf-transformers-speech"
HUB_PATTERNS = ("config.json", "preprocessor_config.json", "*.safetensors", "model.safetensors.index.json")
# model_type -> base_model_prefix of the family's classes with a head
PREFIXES = {
    "wav2vec2": "wav2vec2",
    "hubert": "hubert",
    "data2vec-audio": "data2vec_audio",
    "unispeech-sat": "unispeech_sat",
    "wavlm": "wavlm",
}
# Keys beside the prefixed base model, by the head that holds them: never used for embeddings.
HEAD_KEYS = "|".join(
    (
        r"lm_head\.(weight|bias)",  # ...ForCTC
        r"(projector|classifier)\.(weight|bias)",  # ...ForSequenceClassification, ...ForAudioFrameClassification
        r"layer_weights",  # use_weighted_layer_sum
        r"(tdnn\.\d+\.kernel|feature_extractor|objective)\.(weight|bias)",  # ...ForXVector (`feature_extractor`: its Linear)
        r"quantizer\.(codevectors|weight_proj\.weight|weight_proj\.bias)",  # ...ForPreTraining: the Gumbel quantizer
        r"(project_q|project_hid)\.(weight|bias)",  # ...ForPreTraining: contrastive projections
        r"(speaker_proj|layer_norm_for_extract)\.(weight|bias)|label_embeddings_concat",  # UniSpeechSatForPreTraining
    )
)
MASK_EMBED = "masked_spec_embed"  # SpecAugment's learned mask vector: training only
POS_CONV = "encoder.pos_conv_embed.conv"
WEIGHT_NORM_NAMES = (("weight_g", "weight_v"), ("parametrizations.weight.original0", "parametrizations.weight.original1"))

_RULES = [
    Rule(r"feature_encoder\.conv_layers\.(\d+)\.conv\.(weight|bias)", (r"{p}feature_extractor.conv_layers.\1.conv.\2",)),
    Rule(
        r"feature_encoder\.conv_layers\.(\d+)\.norm\.(weight|bias)",
        (r"{p}feature_extractor.conv_layers.\1.layer_norm.\2",),
    ),
    Rule(r"projection\.norm\.(weight|bias)", (r"{p}feature_projection.layer_norm.\1",)),
    Rule(r"projection\.linear\.(weight|bias)", (r"{p}feature_projection.projection.\1",)),
    Rule(r"transformer\.pos_conv\.conv\.(weight|bias)", (r"{p}encoder.pos_conv_embed.conv.\1",)),
    Rule(
        r"transformer\.pos_conv\.layers\.(\d+)\.conv\.(weight|bias)",
        (r"{p}encoder.pos_conv_embed.layers.\1.conv.\2",),
    ),
    Rule(r"transformer\.norm\.(weight|bias)", (r"{p}encoder.layer_norm.\1",)),
    Rule(r"transformer\.rel_pos\.embedding\.weight", (r"{p}encoder.layers.0.attention.rel_attn_embed.weight",)),
    Rule(
        r"transformer\.layers\.(\d+)\.attn\.qkv\.(weight|bias)",
        tuple(rf"{{p}}encoder.layers.\1.attention.{name}_proj.\2" for name in ("q", "k", "v")),
    ),
    Rule(r"transformer\.layers\.(\d+)\.attn\.proj\.(weight|bias)", (r"{p}encoder.layers.\1.attention.out_proj.\2",)),
    Rule(
        r"transformer\.layers\.(\d+)\.attn\.gate\.(weight|bias)",
        (r"{p}encoder.layers.\1.attention.gru_rel_pos_linear.\2",),
    ),
    Rule(r"transformer\.layers\.(\d+)\.attn\.gate_const", (r"{p}encoder.layers.\1.attention.gru_rel_pos_const",)),
    Rule(r"transformer\.layers\.(\d+)\.norm1\.(weight|bias)", (r"{p}encoder.layers.\1.layer_norm.\2",)),
    Rule(
        r"transformer\.layers\.(\d+)\.mlp\.fc1\.(weight|bias)",
        (r"{p}encoder.layers.\1.feed_forward.intermediate_dense.\2",),
    ),
    Rule(
        r"transformer\.layers\.(\d+)\.mlp\.fc2\.(weight|bias)",
        (r"{p}encoder.layers.\1.feed_forward.output_dense.\2",),
    ),
    Rule(r"transformer\.layers\.(\d+)\.norm2\.(weight|bias)", (r"{p}encoder.layers.\1.final_layer_norm.\2",)),
]


@dataclass(frozen=True)
class SpeechCheckpoint:
    """A speech checkpoint converted to our layout, and everything needed to build and describe the model."""

    config: SpeechEncoderConfig
    state_dict: dict[str, torch.Tensor]  # our keys (SpeechEncoder.state_dict())
    weights_path: Path  # the file whose sha256 identifies the checkpoint
    format: str = FORMAT

    @property
    def family(self) -> str:
        return self.config.family

    def build_encoder(self) -> SpeechEncoder:
        """waveform -> hidden states, weights loaded with strict=True, in eval mode."""
        encoder = SpeechEncoder(self.config)
        encoder.load_state_dict(self.state_dict, strict=True)
        return encoder.eval()

    def build(self, layer: int | str | None = None) -> SpeechEmbeddingModel:
        """waveform -> (embedding, frames) of `layer` (an int in 0..L, "mean", default the last), in eval mode."""
        head = SpeechEmbeddingHead(self.config.num_layers, layer)
        return SpeechEmbeddingModel(self.build_encoder(), head).eval()

    def sha256(self) -> str:
        return sha256_file(self.weights_path)


def _int_tuple(config: Mapping[str, Any], field: str, where: str) -> tuple[int, ...]:
    value = config.get(field)
    if not isinstance(value, list | tuple) or not all(isinstance(item, int) and not isinstance(item, bool) for item in value):
        raise CheckpointError(f"{where}: {field} must be a list of integers; got {value!r}")
    return tuple(value)


def _refuse(config: Mapping[str, Any], field: str, why: str, where: str) -> None:
    """CheckpointError when `field` is set (true, or not null) in config.json."""
    value = config.get(field)
    if value not in (None, False):
        raise CheckpointError(f"{where}: {field}={value!r} is not supported ({why})")


def speech_config(config: Mapping[str, Any], normalize: bool, where: str = "config.json") -> SpeechEncoderConfig:
    """Our SpeechEncoderConfig from a transformers config.json (the family's defaults for absent fields)."""
    family = config.get("model_type")
    if family not in FAMILIES:
        raise CheckpointError(f"{where}: model_type {family!r} is not a waveform speech encoder we run ({', '.join(FAMILIES)})")
    for field in ("hidden_act", "feat_extract_activation"):
        if config.get(field, "gelu") != "gelu":
            raise CheckpointError(f"{where}: {field} {config[field]!r} not supported (only exact 'gelu')")
    _refuse(config, "add_adapter", "the conv adapter after the encoder; not implemented", where)
    _refuse(config, "adapter_attn_dim", "per-language attention adapters (MMS); not implemented", where)
    _refuse(config, "conv_pos_batch_norm", "HuBERT's batch-norm position conv; not implemented", where)
    conv_dim, conv_kernel, conv_stride = (_int_tuple(config, field, where) for field in ("conv_dim", "conv_kernel", "conv_stride"))
    layers = config.get("num_feat_extract_layers", len(conv_dim))
    if layers != len(conv_dim):
        raise CheckpointError(f"{where}: num_feat_extract_layers {layers} but {len(conv_dim)} conv_dim entries")
    data2vec = family == "data2vec-audio"
    conv_norm = "layer" if data2vec else config.get("feat_extract_norm", "group")
    if conv_norm not in CONV_NORMS:
        raise CheckpointError(f"{where}: feat_extract_norm {conv_norm!r} not supported (only {' or '.join(CONV_NORMS)})")
    try:
        result = SpeechEncoderConfig(
            family=family,
            conv_dim=conv_dim,
            conv_kernel=conv_kernel,
            conv_stride=conv_stride,
            conv_bias=bool(config.get("conv_bias", False)),
            conv_norm=conv_norm,
            projection_norm=bool(config.get("feat_proj_layer_norm", True)) if family == "hubert" else True,
            hidden_size=int(config.get("hidden_size", 768)),
            num_layers=int(config.get("num_hidden_layers", 12)),
            num_heads=int(config.get("num_attention_heads", 12)),
            intermediate_size=int(config.get("intermediate_size", 3072)),
            pos_conv="stacked" if data2vec else "weight_norm",
            pos_conv_kernel=int(config.get("conv_pos_kernel_size", 19) if data2vec else config.get("num_conv_pos_embeddings", 128)),
            pos_conv_groups=int(config.get("num_conv_pos_embedding_groups", 16)),
            pos_conv_depth=int(config.get("num_conv_pos_embeddings", 5)) if data2vec else 1,
            stable_layer_norm=False if data2vec else bool(config.get("do_stable_layer_norm", False)),
            layer_norm_eps=float(config.get("layer_norm_eps", 1e-5)),
            relative_position=family == "wavlm",
            num_buckets=int(config.get("num_buckets", 320)),
            max_distance=int(config.get("max_bucket_distance", 800)),
            normalize=normalize,
        )
        result.validate()
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{where}: {error}") from error
    return result


def extractor_normalize(preprocessor: Mapping[str, Any] | None, normalize: bool | None, where: str) -> bool:
    """do_normalize of the feature extractor (preprocessor_config.json), checked to be 16 kHz mono."""
    if preprocessor is None:
        if normalize is None:
            raise CheckpointError(
                f"{where}: no preprocessor_config.json, so whether the model expects normalised input "
                "(the feature extractor's do_normalize) is unknown; pass normalize=True or False"
            )
        return normalize
    rate = preprocessor.get("sampling_rate", SAMPLE_RATE)
    if rate != SAMPLE_RATE:
        raise CheckpointError(f"{where}: sampling_rate {rate} not supported (only {SAMPLE_RATE} Hz)")
    if preprocessor.get("feature_size", 1) != 1:
        raise CheckpointError(f"{where}: feature_size {preprocessor['feature_size']} not supported (a mono waveform is 1)")
    recorded = preprocessor.get("do_normalize", True)  # Wav2Vec2FeatureExtractor's default
    if not isinstance(recorded, bool):
        raise CheckpointError(f"{where}: do_normalize must be true or false; got {recorded!r}")
    if normalize is not None and normalize != recorded:
        raise CheckpointError(f"{where}: do_normalize is {recorded}, but normalize={normalize} was asked for")
    return recorded


def _prefix(state: Mapping[str, torch.Tensor], family: str) -> str:
    prefix = f"{PREFIXES[family]}."
    return prefix if any(key.startswith(prefix) for key in state) else ""


def _fold_pos_conv(state: Mapping[str, torch.Tensor], prefix: str, where: str) -> dict[str, torch.Tensor]:
    """`state` with the position conv's weight norm folded into `{prefix}encoder.pos_conv_embed.conv.weight`."""
    state = dict(state)
    conv = f"{prefix}{POS_CONV}"
    for g_name, v_name in WEIGHT_NORM_NAMES:
        g_key, v_key = f"{conv}.{g_name}", f"{conv}.{v_name}"
        if g_key in state and v_key in state:
            g, v = state.pop(g_key), state.pop(v_key)
            if g.dim() != v.dim() or any(a not in (1, b) for a, b in zip(g.shape, v.shape, strict=True)):
                raise CheckpointError(f"{where}: {g_key} {list(g.shape)} does not fit {v_key} {list(v.shape)}")
            state[f"{conv}.weight"] = fold_weight_norm(g.double(), v.double()).float()
            return state
        if (g_key in state) != (v_key in state):
            present, absent = (g_key, v_key) if g_key in state else (v_key, g_key)
            raise CheckpointError(f"{where}: missing key {absent!r} (the weight norm of the position conv, beside {present!r})")
    if f"{conv}.weight" not in state:
        raise CheckpointError(f"{where}: missing key '{conv}.weight_g' / '{conv}.weight_v' (the position conv)")
    return state


def convert_speech_state(
    state: Mapping[str, torch.Tensor], config: SpeechEncoderConfig, where: str
) -> dict[str, torch.Tensor]:
    """Our SpeechEncoder state dict from a transformers state dict of `config`'s family, every key checked."""
    prefix = _prefix(state, config.family)
    if config.pos_conv == "weight_norm":
        state = _fold_pos_conv(state, prefix, where)
    rules = [Rule(rule.ours, tuple(t.replace("{p}", prefix) for t in rule.theirs)) for rule in _RULES]
    ignore = rf"{re.escape(prefix)}{MASK_EMBED}"
    if prefix:
        ignore += f"|{HEAD_KEYS}"
    return convert_state_dict(state, module_shapes(SpeechEncoder, config), rules, where=where, ignore=ignore)


def fetch_hub(repo_id: str) -> Path:
    """A hub checkpoint's config, extractor config and weights in the local Hugging Face cache."""
    directory = hub_snapshot(repo_id, HUB_PATTERNS)
    if not any((directory / name).is_file() for name in HF_WEIGHT_FILES[:2]):
        directory = hub_snapshot(repo_id, ["pytorch_model.bin"])
    return directory


def read_speech_checkpoint(reference: str | Path, normalize: bool | None = None) -> SpeechCheckpoint:
    """A transformers speech checkpoint (save_pretrained directory or hub id), converted.

    normalize: the feature extractor's do_normalize, needed only when the directory has no
    preprocessor_config.json (and checked against it when it has one).
    """
    directory = Path(reference)
    if not directory.exists():
        directory = fetch_hub(str(reference))
    if not directory.is_dir():
        raise CheckpointError(f"{reference}: expected a save_pretrained directory (config.json + weights)")
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{directory}: no config.json; not a transformers save_pretrained directory")
    preprocessor_file = directory / "preprocessor_config.json"
    preprocessor = read_json(preprocessor_file) if preprocessor_file.is_file() else None
    do_normalize = extractor_normalize(preprocessor, normalize, str(preprocessor_file if preprocessor else directory))
    config = speech_config(read_json(config_file), do_normalize, str(config_file))
    state, weights_path = read_hf_weights(directory)
    converted = convert_speech_state(state, config, str(weights_path))
    return SpeechCheckpoint(config=config, state_dict=converted, weights_path=weights_path)
