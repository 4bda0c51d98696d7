"""PaSST checkpoints (kkoutini/PaSST, hear21passt: the released `passt-s-*.pt`) -> our ASTEncoder.

The file is a bare state_dict of the PaSST net, timm ViT keys: `cls_token`, `dist_token`,
`patch_embed.proj.*`, `blocks.N.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}.*`, `norm.*`,
plus PaSST's position tables `new_pos_embed` (1, 2, D) for cls and dist, `freq_new_pos_embed`
(1, D, F', 1), `time_new_pos_embed` (1, D, 1, T_table), and the head `head.0` (LayerNorm, eps 1e-5),
`head.1` (Linear). Keys map one to one; nothing is transposed (our FreqTimePositionEmbedding keeps
PaSST's table layouts). `head_dist.*` (the distillation head, unused at inference) is dropped.

Not in the file: the number of heads (12 in the released models; an argument), the patch strides
(10 in passt-s-*-s10; checked against the frequency table, which fixes the mel stride), and the
window: the time table holds the columns of the longest input (99 for 998 frames); a window uses
its first T' columns, so windows up to ~10 s (1005 frames) fit a released model.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from earshot_models.checkpoints.encoder_checkpoint import (
    EncoderCheckpoint,
    checked_labels,
    count_blocks,
    expected_shapes,
    require,
    square_patch,
    validated,
)
from earshot_models.checkpoints.io import CheckpointError, read_torch
from earshot_models.checkpoints.mapping import Rule, convert_state_dict
from earshot_models.config import PASST_BASE, PASST_MEL, EncoderConfig, StftMelConfig

FORMAT = "passt-pt"
KIND = "a PaSST checkpoint"  # in errors: "missing key ...; not a PaSST checkpoint?"
DEFAULT_WINDOW_SECONDS = 10.0

_RULES = [
    Rule(r"cls_token", (r"cls_token",)),
    Rule(r"dist_token", (r"dist_token",)),
    Rule(r"pos_embed\.prefix", (r"new_pos_embed",)),
    Rule(r"pos_embed\.freq", (r"freq_new_pos_embed",)),
    Rule(r"pos_embed\.time", (r"time_new_pos_embed",)),
    Rule(r"(patch_embed\.proj|blocks\.\d+\.[\w.]+|norm)\.(weight|bias)", (r"\1.\2",)),
    Rule(r"head_norm\.(weight|bias)", (r"head.0.\1",)),
    Rule(r"head\.(weight|bias)", (r"head.1.\1",)),
]
_IGNORED = r"head_dist\.(weight|bias)"  # the distillation head: trained, never used at inference


def passt_frontend(window_seconds: float) -> StftMelConfig:
    return replace(PASST_MEL, window_samples=round(window_seconds * PASST_MEL.sample_rate))


def encoder_config(
    state: dict, where: str, frontend: StftMelConfig, fstride: int, tstride: int, num_heads: int
) -> EncoderConfig:
    """Our EncoderConfig from the tensor shapes of a PaSST state dict and the window's frame count."""
    embed_dim = int(require(state, "cls_token", where, KIND).shape[-1])
    require(state, "patch_embed.proj.weight", where, KIND)
    freq_table = require(state, "freq_new_pos_embed", where, KIND)  # (1, D, F', 1)
    time_table = require(state, "time_new_pos_embed", where, KIND)  # (1, D, 1, T_table)
    if freq_table.ndim != 4 or time_table.ndim != 4:
        raise CheckpointError(
            f"{where}: freq_new_pos_embed / time_new_pos_embed must be 4-D, (1, D, F', 1) / (1, D, 1, T)"
        )
    head = state.get("head.1.weight")
    config = replace(
        PASST_BASE,
        patch_size=square_patch(state, "patch_embed.proj.weight", where),
        fstride=fstride,
        tstride=tstride,
        input_fdim=frontend.num_mel_bins,
        input_tdim=frontend.num_frames,
        embed_dim=embed_dim,
        depth=count_blocks(state, ""),
        num_heads=num_heads,
        mlp_hidden_dim=int(require(state, "blocks.0.mlp.fc1.weight", where, KIND).shape[0]),
        qkv_bias="blocks.0.attn.qkv.bias" in state,
        num_classes=int(head.shape[0]) if head is not None else 0,
        pos_embed_time_patches=int(time_table.shape[3]),
    )
    f_dim, t_dim = config.grid
    if int(freq_table.shape[2]) != f_dim:
        raise CheckpointError(
            f"{where}: key 'freq_new_pos_embed' has {freq_table.shape[2]} frequency positions, but patches "
            f"{config.patch_size} at fstride={fstride} over {config.input_fdim} mel make {f_dim}; "
            "pass the strides the model was trained with"
        )
    if t_dim > config.time_table_patches:
        seconds = frontend.window_samples / frontend.sample_rate
        raise CheckpointError(
            f"{where}: a {seconds:g} s window makes {frontend.num_frames} frames, {t_dim} time patches; the "
            f"time position table holds {config.time_table_patches}: use a shorter window"
        )
    return validated(config, where)


def read_passt(
    path: str | Path,
    window_seconds: float = DEFAULT_WINDOW_SECONDS,
    num_heads: int = PASST_BASE.num_heads,
    fstride: int = PASST_BASE.fstride,
    tstride: int = PASST_BASE.tstride,
    labels: list[str] | None = None,
) -> EncoderCheckpoint:
    """A PaSST state dict (.pt) for windows of `window_seconds` at 32 kHz. labels: one per class,
    in the head's order; `class_<i>` when None."""
    path = Path(path)
    where = str(path)
    state = read_torch(path)
    try:
        frontend = passt_frontend(window_seconds)
        frontend.validate()
    except ValueError as error:
        raise CheckpointError(f"{where}: {error}") from error
    encoder = encoder_config(state, where, frontend, fstride, tstride, num_heads)
    converted = convert_state_dict(state, expected_shapes(encoder), _RULES, where=where, ignore=_IGNORED)
    return EncoderCheckpoint(
        frontend=frontend,
        encoder=encoder,
        state_dict=converted,
        labels=checked_labels(labels, encoder.num_classes, where),
        weights_path=path,
        format=FORMAT,
    )
