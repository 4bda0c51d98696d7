"""LAION's own CLAP checkpoints (laion_clap `.pt` files: 630k-best.pt, 630k-audioset-best.pt,
music_audioset_epoch_15_esc_90.14.pt, ...) -> a transformers ClapModel save_pretrained layout.

The file is `torch.load`ed with weights_only=True: a dict with "state_dict" (other entries, such as
"epoch", are left alone) or a bare state dict; the `module.` prefix DistributedDataParallel puts on
every key is stripped. Everything downstream (checkpoints/clap.py: read_clap_checkpoint, the export
of the text tower) then reads the directory this module writes, as for any Hugging Face CLAP.

The files carry no config: the geometry is read from tensor shapes, never from a file name.
- HTS-AT: embed dim and patch size from patch_embed.proj.weight (out, 1, p, p); stages and their
  depths from the layers.S.blocks.B keys; heads per stage from relative_position_bias_table's
  columns, the window from its rows ((2w - 1)^2); mlp ratio from mlp.fc1; mel bins from bn0; n_fft
  from the STFT basis. spec_size 256 and patch stride = patch size are what laion_clap's
  create_htsat_model builds for every variant; the shifted-window masks (attn_mask), where the file
  has them, are checked against the grid that gives.
- Frontend: logmel_extractor.melW must be the Slaney bank at 48 kHz, 50-14000 Hz (every released
  HTS-AT model's audio_cfg); hop 480 and the 10 s window (480000 samples) are laion_clap's too
  (they leave no trace in the weights). preprocessor_config.json is written with those values:
  ClapFeatureExtractor, truncation "rand_trunc", padding "repeatpad" (get_audio_embedding_from_data
  for unfused models).
- RoBERTa text branch: layers, hidden size, intermediate size, vocab, positions and token types from
  the embeddings and encoder.layer.N keys. Its attention heads are NOT recoverable from shapes:
  roberta-base's rule (hidden / 64: 12 for the released 768-wide branch) unless `text_heads` says
  otherwise. layer_norm_eps 1e-5, pad id 1 (positions counted from it): roberta-base's config.
- Projections: the joint dim from audio_projection.0.weight.

Key mapping (laion_clap -> transformers ClapModel); q, k and v are cut from qkv along dim 0 (nothing
transposed); everything else is copied as is:
  text_branch.*                                      -> text_model.* (the same RobertaModel layout)
  text_projection.0.*, .2.*                          -> text_projection.linear1.*, linear2.*
  audio_projection.0.*, .2.*                         -> audio_projection.linear1.*, linear2.*
  logit_scale_a, logit_scale_t (scalars)            -> logit_scale_a, logit_scale_t
  audio_branch.bn0.*                                 -> audio_model.audio_encoder.batch_norm.*
  audio_branch.patch_embed.{proj,norm}.*             -> audio_model.audio_encoder.patch_embed.{proj,norm}.*
  audio_branch.layers.S.blocks.B.                    -> audio_model.audio_encoder.layers.S.blocks.B.
      norm1 / norm2                                      layernorm_before / layernorm_after
      attn.qkv.{weight,bias} (thirds, in q, k, v order)  attention.self.{query,key,value}.*
      attn.relative_position_bias_table, _index          attention.self.relative_position_bias_table, _index
      attn.proj.*                                        attention.output.dense.*
      mlp.fc1.*, mlp.fc2.*                               intermediate.dense.*, output.dense.*
  audio_branch.layers.S.downsample.{reduction,norm}.* -> audio_model.audio_encoder.layers.S.downsample.*
  audio_branch.norm.*                                -> audio_model.audio_encoder.norm.*
Made here, not read: text_model.embeddings.position_ids (arange) and token_type_ids (zeros), buffers
transformers keeps but never reads on this path. Keys in the file that are not used (IGNORED) are
listed below with why; any other key is an error, as is any key the model needs and the file lacks.

Refused with CheckpointError: fused checkpoints (fusion_model / mel_conv keys: 630k-fusion-best.pt
and the like), a PANN audio branch, text branches other than RoBERTa (LAION also trained BERT, BART
and CLIP-transformer text branches; the message names which it found).

The tokenizer: a laion .pt holds none (LAION tokenizes with roberta-base's). `tokenizer_dir` (a
directory with roberta-base's tokenizer files) is copied into the output; without it the directory
has no tokenizer, the audio tower works, and anything that embeds text (zero-shot labels, the text
tower) needs one: give `--tokenizer DIR` / tokenizer_dir.
"""

from __future__ import annotations

import math
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from earshot_models.checkpoints.io import CheckpointError
from earshot_models.checkpoints.mapping import Rule, convert_state_dict

FORMAT = "laion-clap-pt"
DDP_PREFIX = "module."
# laion_clap's create_htsat_model builds every variant with these (they leave no trace in the weights)
SPEC_SIZE = 256
# laion_clap's audio_cfg of every released HTS-AT model, and get_audio_embedding_from_data's window
SAMPLE_RATE = 48000
HOP_LENGTH = 480  # 10 ms at 48 kHz
WINDOW_SECONDS = 10
F_MIN, F_MAX = 50.0, 14000.0
MEL_TOLERANCE = 1e-4  # relative to the bank's largest weight (float32 librosa vs float64 transformers)
ROBERTA_HEAD_DIM = 64  # roberta-base: 768 wide, 12 heads
ROBERTA = dict(layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0, eos_token_id=2, hidden_act="gelu")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt",
                   "special_tokens_map.json", "added_tokens.json")

A = "audio_branch."
HF_AUDIO = "audio_model.audio_encoder."
HF_BLOCK = r"audio_model\.audio_encoder\.layers\.(\d+)\.blocks\.(\d+)\."
BLOCK = A + r"layers.\1.blocks.\2."
_RULES = [
    Rule(r"text_model\.(.+)", (r"text_branch.\1",)),
    Rule(r"(text|audio)_projection\.linear1\.(weight|bias)", (r"\1_projection.0.\2",)),
    Rule(r"(text|audio)_projection\.linear2\.(weight|bias)", (r"\1_projection.2.\2",)),
    Rule(r"audio_model\.audio_encoder\.batch_norm\.(.+)", (A + r"bn0.\1",)),
    Rule(r"audio_model\.audio_encoder\.patch_embed\.(proj|norm)\.(weight|bias)", (A + r"patch_embed.\1.\2",)),
    Rule(HF_BLOCK + r"layernorm_before\.(weight|bias)", (BLOCK + r"norm1.\3",)),
    Rule(HF_BLOCK + r"layernorm_after\.(weight|bias)", (BLOCK + r"norm2.\3",)),
    Rule(HF_BLOCK + r"attention\.self\.(query|key|value)\.(weight|bias)", (BLOCK + r"attn.qkv.\4[\3]",)),
    Rule(HF_BLOCK + r"attention\.self\.(relative_position_bias_table|relative_position_index)", (BLOCK + r"attn.\3",)),
    Rule(HF_BLOCK + r"attention\.output\.dense\.(weight|bias)", (BLOCK + r"attn.proj.\3",)),
    Rule(HF_BLOCK + r"intermediate\.dense\.(weight|bias)", (BLOCK + r"mlp.fc1.\3",)),
    Rule(HF_BLOCK + r"output\.dense\.(weight|bias)", (BLOCK + r"mlp.fc2.\3",)),
    Rule(r"audio_model\.audio_encoder\.layers\.(\d+)\.downsample\.(reduction|norm)\.(weight|bias)",
         (A + r"layers.\1.downsample.\2.\3",)),
    Rule(r"audio_model\.audio_encoder\.norm\.(weight|bias)", (A + r"norm.\1",)),
]
# made here, not read from the file (transformers keeps them as buffers; this path never reads them)
# 0-d tensors, copied here as they are (mapping.convert_state_dict takes none): ours <- the file's
SCALARS = {
    "logit_scale_a": "logit_scale_a",
    "logit_scale_t": "logit_scale_t",
    HF_AUDIO + "batch_norm.num_batches_tracked": A + "bn0.num_batches_tracked",
}
# keys of the file that are not used, and why
IGNORED = {
    r"text_branch\.embeddings\.(position_ids|token_type_ids)":
        "RoBERTa's index buffers (arange, zeros): positions are counted from the padding id, made anew",
    r"audio_branch\.spectrogram_extractor\.stft\.conv_(real|imag)\.weight":
        "torchlibrosa's STFT basis (Hann window): the frontend, fixed; its n_fft is checked, the "
        "feature extractor makes its own",
    r"audio_branch\.logmel_extractor\.melW":
        "the mel filter bank: fixed; checked against the Slaney bank written to preprocessor_config.json",
    r"audio_branch\.layers\.\d+\.blocks\.\d+\.attn_mask":
        "shifted-window attention masks: fixed by the geometry, checked, recomputed by transformers",
    r"audio_branch\.(tscam_conv|head)\.(weight|bias)":
        "HTS-AT's AudioSet classification head: CLAP's embedding is the pooled features before it",
    r"(audio|text)_transform\.sequential\.\d+\.(weight|bias)":
        "the MLPs of the training loss; get_audio_embedding / get_text_embedding do not use them",
}
_FUSION = re.compile(r"audio_branch\.(.*\.)?(fusion_model|mel_conv1d|mel_conv2d)\..*")


def load_laion_state(path: Path) -> dict[str, torch.Tensor]:
    """The state dict of a laion_clap .pt, `module.` stripped (weights_only: no code from the file runs)."""
    if not Path(path).is_file():
        raise CheckpointError(f"checkpoint file {path} does not exist")
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:  # UnpicklingError (objects other than tensors), zip errors, EOF
        hint = ""
        if "weights_only" in str(error).lower() or "unpickl" in type(error).__name__.lower():
            hint = (" If it is a LAION file holding Python objects besides tensors, re-save its weights once: "
                    "torch.save({'state_dict': torch.load(f, weights_only=False)['state_dict']}, new_file).")
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint: {error}.{hint}") from error
    if isinstance(data, Mapping) and isinstance(data.get("state_dict"), Mapping):
        data = data["state_dict"]
    if not isinstance(data, Mapping):
        raise CheckpointError(f"{path}: expected a state dict or {{'state_dict': ...}}, got {type(data).__name__}")
    state: dict[str, torch.Tensor] = {}
    for key, value in data.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{path}: entry {key!r} is not a named tensor; expected a state dict")
        state[key[len(DDP_PREFIX):] if key.startswith(DDP_PREFIX) else key] = value
    return state


def _shape(state: Mapping[str, torch.Tensor], key: str, where: str, ndim: int) -> tuple[int, ...]:
    if key not in state:
        raise CheckpointError(f"{where}: missing key {key!r}")
    shape = tuple(state[key].shape)
    if len(shape) != ndim:
        raise CheckpointError(f"{where}: key {key!r} has shape {list(shape)}, expected {ndim} dimensions")
    return shape


def _indices(state: Mapping[str, torch.Tensor], pattern: str) -> list[int]:
    found = {int(m.group(1)) for key in state if (m := re.match(pattern, key))}
    return sorted(found)


def check_kind(state: Mapping[str, torch.Tensor], where: str) -> None:
    """Unfused HTS-AT + RoBERTa, or a CheckpointError that names what the file is."""
    fused = sorted(key for key in state if _FUSION.fullmatch(key))
    if fused:
        raise CheckpointError(
            f"{where}: a fused CLAP (enable_fusion: {fused[0]!r} and {len(fused) - 1} more fusion keys) "
            "is not supported; use an unfused checkpoint (630k-best.pt, 630k-audioset-best.pt, ...)"
        )
    if A + "patch_embed.proj.weight" not in state:
        kind = "a PANN (CNN14) audio branch" if any(k.startswith(A + "conv_block") for k in state) else "no HTS-AT audio branch"
        raise CheckpointError(f"{where}: {kind} (no {A}patch_embed.proj.weight); only HTS-AT CLAP is supported")
    text = "text_branch."
    if any(k.startswith(text + "resblocks.") for k in state) or "token_embedding.weight" in state:
        found = "a CLIP-style transformer text branch (text_branch.resblocks.*, token_embedding)"
    elif any(k.startswith((text + "shared.", text + "decoder.")) for k in state):
        found = "a BART text branch (text_branch.shared / encoder.layers / decoder.layers)"
    elif text + "embeddings.word_embeddings.weight" not in state:
        found = "no text branch LAION trained (no text_branch.embeddings.word_embeddings.weight)"
    else:
        types = state.get(text + "embeddings.token_type_embeddings.weight")
        if types is not None and types.shape[0] == 1:
            return  # RoBERTa: one token type
        rows = "none" if types is None else types.shape[0]
        vocab, positions = state[text + "embeddings.word_embeddings.weight"].shape[0], None
        if text + "embeddings.position_embeddings.weight" in state:
            positions = state[text + "embeddings.position_embeddings.weight"].shape[0]
        found = (f"a BERT text branch (token_type_embeddings rows: {rows}, vocab {vocab}, {positions} positions; "
                 "RoBERTa has one token type)")
    raise CheckpointError(f"{where}: {found}: only LAION's RoBERTa text branch is supported")


def audio_config(state: Mapping[str, torch.Tensor], projection_dim: int, where: str) -> dict[str, Any]:
    """transformers' ClapAudioConfig values, from the HTS-AT branch's shapes."""
    embed_dim, channels, patch, patch_w = _shape(state, A + "patch_embed.proj.weight", where, 4)
    if channels != 1 or patch != patch_w:
        raise CheckpointError(f"{where}: patch_embed.proj.weight {[embed_dim, channels, patch, patch_w]}: "
                              "expected one input channel and a square patch")
    stages = _indices(state, re.escape(A) + r"layers\.(\d+)\.blocks\.")
    if not stages or stages != list(range(len(stages))):
        raise CheckpointError(f"{where}: HTS-AT stages {stages}: expected layers.0 .. layers.N")
    depths, heads, windows = [], [], []
    for stage in stages:
        prefix = f"{A}layers.{stage}.blocks."
        blocks = _indices(state, re.escape(prefix) + r"(\d+)\.")
        if blocks != list(range(len(blocks))):
            raise CheckpointError(f"{where}: stage {stage} blocks {blocks}: expected blocks.0 .. blocks.N")
        depths.append(len(blocks))
        rows, stage_heads = _shape(state, prefix + "0.attn.relative_position_bias_table", where, 2)
        window = (math.isqrt(rows) + 1) // 2
        if (2 * window - 1) ** 2 != rows:
            raise CheckpointError(f"{where}: {prefix}0.attn.relative_position_bias_table has {rows} rows, not (2w-1)^2")
        heads.append(stage_heads)
        windows.append(window)
    grid = SPEC_SIZE // patch
    window_size = windows[0]
    for stage, window in enumerate(windows):
        side = grid >> stage
        expected = min(window_size, side)  # Swin: a stage no larger than the window is one window
        if window != expected:
            raise CheckpointError(f"{where}: stage {stage} window {window}, expected {expected} "
                                  f"(window {window_size} on a {side}x{side} grid)")
        for block in range(depths[stage]):
            mask = state.get(f"{A}layers.{stage}.blocks.{block}.attn_mask")
            if mask is not None and tuple(mask.shape) != ((side // window) ** 2, window * window, window * window):
                raise CheckpointError(
                    f"{where}: layers.{stage}.blocks.{block}.attn_mask has shape {list(mask.shape)}; spec size "
                    f"{SPEC_SIZE} and patch stride {patch} give a {side}x{side} grid of {window}x{window} windows"
                )
    hidden = embed_dim * 2 ** (len(stages) - 1)
    fc1, width = _shape(state, f"{A}layers.0.blocks.0.mlp.fc1.weight", where, 2)
    (num_mel_bins,) = _shape(state, A + "bn0.weight", where, 1)
    (norm,) = _shape(state, A + "norm.weight", where, 1)
    if norm != hidden:
        raise CheckpointError(f"{where}: {A}norm.weight has {norm} features, expected {hidden} "
                              f"({embed_dim} * 2^{len(stages) - 1})")
    config: dict[str, Any] = dict(
        spec_size=SPEC_SIZE,
        num_mel_bins=num_mel_bins,
        patch_size=patch,
        patch_stride=[patch, patch],
        patch_embeds_hidden_size=embed_dim,
        depths=depths,
        num_attention_heads=heads,
        num_hidden_layers=len(depths),
        window_size=window_size,
        mlp_ratio=fc1 / width,
        qkv_bias=f"{A}layers.0.blocks.0.attn.qkv.bias" in state,
        enable_patch_layer_norm=A + "patch_embed.norm.weight" in state,
        hidden_size=hidden,
        projection_dim=projection_dim,
        enable_fusion=False,
        fusion_type=None,
        flatten_patch_embeds=True,
        patch_embed_input_channels=1,
        hidden_act="gelu",
        projection_hidden_act="relu",
        layer_norm_eps=1e-5,
    )
    if A + "tscam_conv.weight" in state:
        config["num_classes"] = int(state[A + "tscam_conv.weight"].shape[0])
    return config


def text_config(state: Mapping[str, torch.Tensor], projection_dim: int, where: str,
                text_heads: int | None) -> dict[str, Any]:
    """transformers' ClapTextConfig values, from the RoBERTa branch's shapes (heads: see the module doc)."""
    vocab_size, hidden = _shape(state, "text_branch.embeddings.word_embeddings.weight", where, 2)
    positions, _ = _shape(state, "text_branch.embeddings.position_embeddings.weight", where, 2)
    types, _ = _shape(state, "text_branch.embeddings.token_type_embeddings.weight", where, 2)
    layers = _indices(state, r"text_branch\.encoder\.layer\.(\d+)\.")
    if not layers or layers != list(range(len(layers))):
        raise CheckpointError(f"{where}: text branch layers {layers}: expected encoder.layer.0 .. layer.N")
    intermediate, _ = _shape(state, "text_branch.encoder.layer.0.intermediate.dense.weight", where, 2)
    if text_heads is None:
        if hidden % ROBERTA_HEAD_DIM:
            raise CheckpointError(
                f"{where}: a {hidden}-wide text branch: its attention heads are not in the file and roberta-base's "
                f"rule (hidden / {ROBERTA_HEAD_DIM}) does not apply; give the number of heads (text_heads / --num-heads)"
            )
        text_heads = hidden // ROBERTA_HEAD_DIM
    if text_heads <= 0 or hidden % text_heads:
        raise CheckpointError(f"{where}: {text_heads} text attention heads do not divide the width {hidden}")
    return dict(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=len(layers),
        num_attention_heads=text_heads,
        intermediate_size=intermediate,
        max_position_embeddings=positions,
        type_vocab_size=types,
        projection_dim=projection_dim,
        projection_hidden_act="relu",
        **ROBERTA,
    )


def frontend_values(state: Mapping[str, torch.Tensor], num_mel_bins: int, where: str) -> dict[str, Any]:
    """ClapFeatureExtractor's values for the file's frontend, after checking its STFT and mel bank."""
    from transformers.audio_utils import mel_filter_bank

    bins, _, n_fft = _shape(state, A + "spectrogram_extractor.stft.conv_real.weight", where, 3)
    if bins != n_fft // 2 + 1:
        raise CheckpointError(f"{where}: STFT basis of {bins} bins for n_fft {n_fft}")
    mel = state.get(A + "logmel_extractor.melW")
    if mel is None:
        raise CheckpointError(f"{where}: missing key {A + 'logmel_extractor.melW'!r}")
    expected = torch.from_numpy(mel_filter_bank(
        num_frequency_bins=bins, num_mel_filters=num_mel_bins, min_frequency=F_MIN, max_frequency=F_MAX,
        sampling_rate=SAMPLE_RATE, norm="slaney", mel_scale="slaney",
    ))
    if tuple(mel.shape) != tuple(expected.shape) or (
        (mel.double() - expected).abs().max() > MEL_TOLERANCE * expected.abs().max()
    ):
        raise CheckpointError(
            f"{where}: logmel_extractor.melW {list(mel.shape)} is not the {num_mel_bins}-band Slaney mel bank at "
            f"{SAMPLE_RATE} Hz, {F_MIN:g}-{F_MAX:g} Hz, n_fft {n_fft} of LAION's released models; "
            "this frontend is not supported"
        )
    return dict(
        feature_size=num_mel_bins,
        sampling_rate=SAMPLE_RATE,
        hop_length=HOP_LENGTH,
        max_length_s=WINDOW_SECONDS,
        fft_window_size=n_fft,
        frequency_min=F_MIN,
        frequency_max=F_MAX,
        top_db=None,
        truncation="rand_trunc",
        padding="repeatpad",
    )


def _split_qkv(state: dict[str, torch.Tensor], where: str) -> dict[str, torch.Tensor]:
    """The file's state with each HTS-AT qkv replaced by its thirds, named `...qkv.weight[query]` etc."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if re.fullmatch(re.escape(A) + r"layers\.\d+\.blocks\.\d+\.attn\.qkv\.(weight|bias)", key):
            if value.shape[0] % 3:
                raise CheckpointError(f"{where}: key {key!r} has {value.shape[0]} rows, not q, k and v (3 x dim)")
            for name, part in zip(("query", "key", "value"), value.chunk(3, dim=0), strict=True):
                out[f"{key}[{name}]"] = part
        else:
            out[key] = value
    return out


def convert(
    state: dict[str, torch.Tensor], where: str, text_heads: int | None = None
) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, Any]]:
    """(ClapConfig dict, ClapModel state dict, ClapFeatureExtractor values) of a laion_clap state dict."""
    from transformers import ClapModel

    check_kind(state, where)
    projection_dim, _ = _shape(state, "audio_projection.0.weight", where, 2)
    config: dict[str, Any] = dict(
        model_type="clap",
        architectures=["ClapModel"],
        projection_dim=projection_dim,
        projection_hidden_act="relu",
        logit_scale_init_value=1 / 0.07,
        audio_config=audio_config(state, projection_dim, where),
        text_config=text_config(state, projection_dim, where, text_heads),
    )
    frontend = frontend_values(state, config["audio_config"]["num_mel_bins"], where)
    try:
        with torch.device("meta"):
            model = ClapModel(clap_config(config))
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{where}: the geometry read from its shapes is not a valid CLAP: {error}") from error
    expected = {key: tensor.shape for key, tensor in model.state_dict().items()}
    made = {
        "text_model.embeddings.position_ids": torch.arange(expected["text_model.embeddings.position_ids"][-1])[None],
        "text_model.embeddings.token_type_ids": torch.zeros(tuple(expected["text_model.embeddings.token_type_ids"]),
                                                           dtype=torch.long),
    }
    for ours, theirs in SCALARS.items():
        if theirs not in state:
            raise CheckpointError(f"{where}: missing key {theirs!r}")
        if state[theirs].ndim != 0:
            raise CheckpointError(f"{where}: key {theirs!r} has shape {list(state[theirs].shape)}, expected a scalar")
        made[ours] = state[theirs].float() if state[theirs].is_floating_point() else state[theirs]
    ignore = "|".join(f"(?:{pattern})" for pattern in (*IGNORED, *map(re.escape, SCALARS.values())))
    converted = convert_state_dict(
        _split_qkv(state, where), {k: v for k, v in expected.items() if k not in made}, _RULES, where, ignore=ignore
    )
    converted.update(made)
    return config, {key: converted[key] for key in expected}, frontend


def clap_config(config: dict[str, Any]) -> Any:
    """transformers' ClapConfig of a config dict from convert()."""
    from transformers import ClapConfig

    return ClapConfig(**{key: value for key, value in config.items() if key != "model_type"})


def read_laion_clap(path: Path, text_heads: int | None = None) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(transformers ClapConfig dict, state dict in ClapModel keys) of a laion_clap .pt.
    text_heads: the RoBERTa branch's attention heads (not in the file; default hidden / 64, roberta-base's rule)."""
    config, state, _ = convert(load_laion_state(path), str(path), text_heads)
    return config, state


def copy_tokenizer(tokenizer_dir: Path, out_dir: Path, vocab_size: int) -> None:
    """The tokenizer files of `tokenizer_dir` (roberta-base's), checked to fit the text branch's vocab."""
    from transformers import AutoTokenizer

    names = [name for name in TOKENIZER_FILES if (Path(tokenizer_dir) / name).is_file()]
    if not any(name in names for name in ("tokenizer.json", "vocab.json")):
        raise CheckpointError(f"{tokenizer_dir}: no tokenizer (none of tokenizer.json, vocab.json + merges.txt)")
    for name in names:
        shutil.copyfile(Path(tokenizer_dir) / name, Path(out_dir) / name)
    try:
        size = len(AutoTokenizer.from_pretrained(str(out_dir)))
    except Exception as error:
        raise CheckpointError(f"{tokenizer_dir}: not a usable tokenizer: {error}") from error
    if size > vocab_size:
        raise CheckpointError(f"{tokenizer_dir}: a tokenizer of {size} tokens for a text branch of {vocab_size}")


def write_transformers_directory(path: Path, out_dir: Path, tokenizer_dir: Path | None = None,
                                 text_heads: int | None = None) -> Path:
    """A transformers ClapModel save_pretrained directory at out_dir (config.json, model.safetensors,
    preprocessor_config.json; the tokenizer files when tokenizer_dir is given: without one, text
    cannot be embedded from the directory). Returns out_dir."""
    from safetensors.torch import save_file
    from transformers import ClapFeatureExtractor

    config, state, frontend = convert(load_laion_state(path), str(path), text_heads)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    clap_config(config).save_pretrained(str(out_dir))
    save_file({key: value.contiguous() for key, value in state.items()}, str(out_dir / "model.safetensors"),
              metadata={"format": "pt"})
    ClapFeatureExtractor(**frontend).save_pretrained(str(out_dir))
    if tokenizer_dir is not None:
        copy_tokenizer(Path(tokenizer_dir), out_dir, config["text_config"]["vocab_size"])
    return out_dir
