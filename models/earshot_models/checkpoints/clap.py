"""CLAP checkpoints in Hugging Face format (transformers ClapModel: laion/clap-htsat-unfused, ...).

A `save_pretrained` directory (config.json, model.safetensors, preprocessor_config.json and the
tokenizer files), or a hub id fetched with huggingface_hub (needs internet the first time).

The audio tower is ours (earshot_models.clap: HTS-AT + projection); its weights map from
transformers' keys one to one, except q, k and v, concatenated into one qkv (nothing transposed):
  audio_model.audio_encoder.batch_norm.{weight,bias,running_mean,running_var} -> encoder.batch_norm.*
  audio_model.audio_encoder.patch_embed.proj.*, .norm.*   -> encoder.patch_embed.*, encoder.patch_norm.*
  audio_model.audio_encoder.layers.S.blocks.B.
      layernorm_before / layernorm_after                  -> encoder.stages.S.blocks.B.norm1 / norm2
      attention.self.{query,key,value}.*                  -> encoder.stages.S.blocks.B.attn.qkv.*
      attention.self.relative_position_bias_table         -> encoder.stages.S.blocks.B.attn.bias_table
      attention.output.dense.*                            -> encoder.stages.S.blocks.B.attn.proj.*
      intermediate.dense.*, output.dense.*                -> encoder.stages.S.blocks.B.mlp.fc1.*, fc2.*
  audio_model.audio_encoder.layers.S.downsample.{norm,reduction}.* -> encoder.stages.S.downsample.*
  audio_model.audio_encoder.norm.*                        -> encoder.norm.*
  audio_projection.linear1.*, linear2.*                   -> projection.fc1.*, fc2.*
The text tower, logit_scale_t and the stored relative_position_index buffers (recomputed) are not
part of the audio bundle. With labels, transformers' ClapModel (from_pretrained: its text tower and
the checkpoint's tokenizer) embeds the prompts once; every key must load (transformers only warns).

What is read from where:
- config.json: model_type "clap"; audio_config.enable_fusion must be false (see audio.py);
  num_mel_bins, spec_size; logit_scale_a comes with the weights.
- preprocessor_config.json (ClapFeatureExtractor): sampling_rate, max_length_s (the window),
  fft_window_size, hop_length, feature_size, frequency_min / max, truncation (only "rand_trunc":
  Slaney mel with Slaney norm; "fusion" extractors use HTK mel for fused models), padding. (top_db
  is stored by the extractor but never applied.)
  Without the file, laion/clap-htsat-unfused's values (CLAP_UNFUSED_FRONTEND).
- With labels: the tokenizer in the directory embeds `prompt.format(label)` for each label through
  the text tower and text projection, once, at export.
- With text (read_clap_checkpoint(..., text=True)): the text tower itself (ClapTextTower over
  transformers' modules) and the tokenizer serialised as `tokenizer.json` for the `tokenizers`
  library, so the service tokenises without transformers. A fast tokenizer is required (transformers
  converts RoBERTa's vocab.json + merges.txt into one). The longest input is RoBERTa's position
  table: max_position_embeddings - pad_token_id - 1 tokens (512 for roberta-base's 514), or the
  tokenizer's model_max_length where that is smaller.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from earshot_models.checkpoints.hub import hub_snapshot
from earshot_models.checkpoints.io import CheckpointError, read_hf_weights, read_json, sha256_file
from earshot_models.checkpoints.mapping import Rule, convert_state_dict, module_shapes
from earshot_models.clap.audio import ClapAudioTower
from earshot_models.clap.config import CLAP_UNFUSED_FRONTEND, ClapFrontendConfig, HtsatConfig
from earshot_models.clap.frontend import ClapFrontend
from earshot_models.clap.text import ClapTextTower
from earshot_models.waveform_model import WaveformModel

FORMAT = "hf-transformers-clap"
MODEL_TYPE = "clap"
DEFAULT_PROMPT = "This is a sound of {}."  # LAION CLAP's zero-shot template
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer_config.json")
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


AUDIO = "audio_model.audio_encoder."
BLOCK = AUDIO + r"layers.\1.blocks.\2."
_RULES = [
    Rule(r"encoder\.batch_norm\.(weight|bias|running_mean|running_var)", (AUDIO + r"batch_norm.\1",)),
    Rule(r"encoder\.patch_embed\.(weight|bias)", (AUDIO + r"patch_embed.proj.\1",)),
    Rule(r"encoder\.patch_norm\.(weight|bias)", (AUDIO + r"patch_embed.norm.\1",)),
    Rule(r"encoder\.stages\.(\d+)\.blocks\.(\d+)\.norm1\.(weight|bias)", (BLOCK + r"layernorm_before.\3",)),
    Rule(r"encoder\.stages\.(\d+)\.blocks\.(\d+)\.norm2\.(weight|bias)", (BLOCK + r"layernorm_after.\3",)),
    Rule(
        r"encoder\.stages\.(\d+)\.blocks\.(\d+)\.attn\.qkv\.(weight|bias)",
        tuple(BLOCK + rf"attention.self.{name}.\3" for name in ("query", "key", "value")),
    ),
    Rule(
        r"encoder\.stages\.(\d+)\.blocks\.(\d+)\.attn\.bias_table",
        (BLOCK + r"attention.self.relative_position_bias_table",),
    ),
    Rule(r"encoder\.stages\.(\d+)\.blocks\.(\d+)\.attn\.proj\.(weight|bias)", (BLOCK + r"attention.output.dense.\3",)),
    Rule(r"encoder\.stages\.(\d+)\.blocks\.(\d+)\.mlp\.fc1\.(weight|bias)", (BLOCK + r"intermediate.dense.\3",)),
    Rule(r"encoder\.stages\.(\d+)\.blocks\.(\d+)\.mlp\.fc2\.(weight|bias)", (BLOCK + r"output.dense.\3",)),
    Rule(r"encoder\.stages\.(\d+)\.downsample\.(norm|reduction)\.(weight|bias)", (AUDIO + r"layers.\1.downsample.\2.\3",)),
    Rule(r"encoder\.norm\.(weight|bias)", (AUDIO + r"norm.\1",)),
    Rule(r"projection\.fc(1|2)\.(weight|bias)", (r"audio_projection.linear\1.\2",)),
    Rule(r"zero_shot\.weight", (r"zero_shot.weight",)),  # made here from the text tower, not in the file
]
_NOT_AUDIO = (
    r"(text_model|text_projection)\..*|logit_scale_[at]|"
    + AUDIO.replace(".", r"\.")
    + r"(batch_norm\.num_batches_tracked|layers\.\d+\.blocks\.\d+\.attention\.self\.relative_position_index)"
)


@dataclass(frozen=True)
class ClapTextCheckpoint:
    """CLAP's text side, as the bundle's text.onnx and tokenizer.json are made from it."""

    tower: ClapTextTower  # eval mode; (B, T) ids and mask -> (B, P) unit norm
    tokenizer_json: str  # the fast tokenizer, serialised (tokenizers.Tokenizer.to_str())
    pad_id: int  # the id padding positions hold (their attention mask is 0)
    max_tokens: int  # longest token sequence, special tokens included; longer inputs are cut
    prompt: str  # the zero-shot template, one '{}'

    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids, attention_mask) (B, T) int64, right-padded to the longest, as the service does."""
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_str(self.tokenizer_json)
        tokenizer.no_padding()
        tokenizer.enable_truncation(self.max_tokens)
        encoded = [tokenizer.encode(text).ids for text in texts]
        longest = max(len(ids) for ids in encoded)
        ids = torch.full((len(texts), longest), self.pad_id, dtype=torch.int64)
        mask = torch.zeros((len(texts), longest), dtype=torch.int64)
        for row, tokens in enumerate(encoded):
            ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.int64)
            mask[row, : len(tokens)] = 1
        return ids, mask


@dataclass(frozen=True)
class ClapCheckpoint:
    frontend: ClapFrontendConfig
    encoder: HtsatConfig
    state_dict: dict[str, torch.Tensor]  # our keys (ClapAudioTower.state_dict()), zero-shot head included
    labels: list[str]
    prompts: list[str]
    logit_scale: float  # exp(logit_scale_a)
    weights_path: Path
    format: str = FORMAT
    text: ClapTextCheckpoint | None = None  # read with text=True

    @property
    def embedding_dim(self) -> int:
        return self.encoder.projection_dim

    def build(self) -> WaveformModel:
        """The waveform-in model, weights loaded with strict=True, in eval mode."""
        tower = ClapAudioTower(self.encoder, self.frontend.num_frames, len(self.labels))
        tower.load_state_dict(self.state_dict, strict=True)
        return WaveformModel(ClapFrontend(self.frontend), tower).eval()

    def sha256(self) -> str:
        return sha256_file(self.weights_path)


def resolve_directory(reference: str | Path) -> Path:
    directory = Path(reference)
    if directory.exists():
        if not (directory / "config.json").is_file():
            raise CheckpointError(f"{directory}: no config.json; not a transformers save_pretrained directory")
        return directory
    return hub_snapshot(reference, HUB_PATTERNS)


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
            )
            config.validate()
        except (TypeError, ValueError) as error:
            raise CheckpointError(f"{where}: {error}") from error
    if config.num_mel_bins != num_mel_bins:
        raise CheckpointError(f"{where}: {config.num_mel_bins} mel bins, the model takes {num_mel_bins}")
    return config


def htsat_config(audio: dict[str, Any], projection_dim: int, where: str) -> HtsatConfig:
    """Our HtsatConfig from config.json's audio_config (transformers' ClapAudioConfig defaults)."""
    for field, expected in (("hidden_act", "gelu"), ("projection_hidden_act", "relu")):
        if audio.get(field, expected) != expected:
            raise CheckpointError(f"{where}: audio_config.{field} {audio[field]!r} not supported (only {expected!r})")
    if not audio.get("flatten_patch_embeds", True) or int(audio.get("patch_embed_input_channels", 1)) != 1:
        raise CheckpointError(f"{where}: only flattened, single-channel patch embeddings are supported")

    def square(name: str, default: int) -> int:
        value = audio.get(name, default)
        if isinstance(value, (list, tuple)):
            if len(set(value)) != 1:
                raise CheckpointError(f"{where}: non-square audio_config.{name} {value} not supported")
            value = value[0]
        return int(value)

    try:
        config = HtsatConfig(
            spec_size=square("spec_size", 256),
            num_mel_bins=int(audio.get("num_mel_bins", 64)),
            patch_size=square("patch_size", 4),
            patch_stride=square("patch_stride", 4),
            embed_dim=int(audio.get("patch_embeds_hidden_size", 96)),
            depths=tuple(int(d) for d in audio.get("depths", (2, 2, 6, 2))),
            num_heads=tuple(int(h) for h in audio.get("num_attention_heads", (4, 8, 16, 32))),
            window_size=int(audio.get("window_size", 8)),
            mlp_ratio=float(audio.get("mlp_ratio", 4.0)),
            qkv_bias=bool(audio.get("qkv_bias", True)),
            patch_norm=bool(audio.get("enable_patch_layer_norm", True)),
            layer_norm_eps=float(audio.get("layer_norm_eps", 1e-5)),
            batch_norm_eps=1e-5,  # nn.BatchNorm2d's default, which transformers uses
            projection_dim=projection_dim,
        )
        config.validate()
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{where}: audio_config: {error}") from error
    if int(audio.get("hidden_size", config.num_features)) != config.num_features:
        raise CheckpointError(f"{where}: audio_config.hidden_size {audio['hidden_size']} != last stage width {config.num_features}")
    return config


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


def load_tokenizer(directory: Path) -> Any:
    """The checkpoint's own tokenizer (transformers, fast), or CheckpointError saying why there is none."""
    from transformers import AutoTokenizer

    if not any((directory / name).is_file() for name in TOKENIZER_FILES):
        # transformers would build an empty tokenizer from config.json alone, and embed nonsense
        raise CheckpointError(f"{directory}: no usable tokenizer for the text tower (none of {TOKENIZER_FILES})")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(directory))
    except Exception as error:
        raise CheckpointError(f"{directory}: no usable tokenizer for the text tower: {error}") from error
    if not getattr(tokenizer, "is_fast", False):
        raise CheckpointError(f"{directory}: the tokenizer is not a fast (tokenizers) one; the service needs tokenizer.json")
    return tokenizer


def embed_prompts(model: torch.nn.Module, tokenizer: Any, prompts: list[str]) -> torch.Tensor:
    """(C, P) L2-normalised text embeddings of the prompts, tokenised by transformers (the reference)."""
    tokens = tokenizer(prompts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return ClapTextTower.from_clap_model(model)(tokens["input_ids"], tokens["attention_mask"])


def text_checkpoint(model: torch.nn.Module, tokenizer: Any, prompt: str) -> ClapTextCheckpoint:
    text_config = model.config.text_config
    pad_id = int(text_config.pad_token_id)
    if tokenizer.pad_token_id is not None and int(tokenizer.pad_token_id) != pad_id:
        raise CheckpointError(f"the tokenizer pads with id {tokenizer.pad_token_id}, the text model with {pad_id}")
    max_tokens = int(text_config.max_position_embeddings) - pad_id - 1  # RoBERTa's positions start at pad_id + 1
    if 0 < int(tokenizer.model_max_length) < max_tokens:
        max_tokens = int(tokenizer.model_max_length)
    return ClapTextCheckpoint(
        tower=ClapTextTower.from_clap_model(model),
        tokenizer_json=tokenizer.backend_tokenizer.to_str(),
        pad_id=pad_id,
        max_tokens=max_tokens,
        prompt=prompt,
    )


def read_clap_checkpoint(
    reference: str | Path, labels: list[str] | None = None, prompt: str | None = None, text: bool = False
) -> ClapCheckpoint:
    """labels: the default zero-shot label set (a head in the audio graph); text: also the text tower."""
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
    encoder = htsat_config(audio, int(config.get("projection_dim", audio.get("projection_dim", 512))), where)
    state, weights_path = read_hf_weights(directory)
    if "logit_scale_a" not in state:
        raise CheckpointError(f"{weights_path}: missing key 'logit_scale_a'")
    logit_scale = math.exp(float(state["logit_scale_a"]))
    prompt = DEFAULT_PROMPT if prompt is None else prompt
    labels = list(labels or [])
    prompts: list[str] = []
    if prompt.count("{}") != 1:
        raise CheckpointError(f"prompt {prompt!r} must contain '{{}}' exactly once (where the label goes)")
    text_side = None
    if labels or text:
        model, tokenizer = load_model(directory), load_tokenizer(directory)
        if labels:
            prompts = [prompt.format(label) for label in labels]
            label_text = embed_prompts(model, tokenizer, prompts)  # (C, P), unit norm
            state = {**state, "zero_shot.weight": logit_scale * label_text}
        if text:
            text_side = text_checkpoint(model, tokenizer, prompt)
    expected = module_shapes(ClapAudioTower, encoder, frontend.num_frames, len(labels))
    converted = convert_state_dict(state, expected, _RULES, where=str(weights_path), ignore=_NOT_AUDIO)
    return ClapCheckpoint(
        frontend=frontend,
        encoder=encoder,
        state_dict=converted,
        labels=labels,
        prompts=prompts,
        logit_scale=logit_scale,
        weights_path=weights_path,
        text=text_side,
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
    return replace(checkpoint, frontend=frontend)  # the tower's weights do not depend on the frame count
