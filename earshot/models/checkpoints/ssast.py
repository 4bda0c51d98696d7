"""SSAST checkpoints (YuanGongND/ssast, fine-tuned as its AudioSet recipe, task `ft_avgtok`) -> our ASTEncoder.

The file is the state_dict of `torch.nn.DataParallel(ASTModel)`: `module.v.*` (a timm DeiT:
`cls_token`, `dist_token`, `pos_embed` (1, 2 + F' T', D), `patch_embed.proj.*`, `blocks.N.*`,
`norm.*`, and timm's unused 1000-class `head.*`, `head_dist.*`, dropped) and `module.mlp_head.0`
(LayerNorm, eps 1e-5), `module.mlp_head.1` (Linear). The layout is AST's .pth; only the pooling
differs: the clip embedding is the mean of the patch tokens after `v.norm` (cls and dist left out).
Keys map one to one, nothing is transposed.

Not in the file: the heads (12 for the released Base models; an argument), the patch strides
(10, 10 in the AudioSet recipe) and the frame count (1024; the position table is fixed). The
self-supervised pre-training files (`cpredlayer`, `gpredlayer`, `mask_embed`; no classifier,
positions for the pre-training grid) are refused: fine-tune them first.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from earshot.models.checkpoints.ast import pth_encoder_config
from earshot.models.checkpoints.encoder_checkpoint import (
    EncoderCheckpoint,
    checked_labels,
    expected_shapes,
    kaldi_frontend,
    require,
    validated,
)
from earshot.models.checkpoints.io import CheckpointError, read_torch
from earshot.models.checkpoints.mapping import Rule, convert_state_dict
from earshot.models.config import AST_FBANK, SSAST_BASE

FORMAT = "ssast-pth"
FAMILY = "fine-tuned SSAST"
DEFAULT_WINDOW_SECONDS = 10.0  # 998 frames of the model's 1024, the rest padded: a 10 s AudioSet clip
PRETRAINING_KEYS = ("cpredlayer.", "gpredlayer.", "mask_embed")

_RULES = [
    Rule(r"cls_token", (r"v.cls_token",)),
    Rule(r"dist_token", (r"v.dist_token",)),
    Rule(r"pos_embed\.weight", (r"v.pos_embed",)),
    Rule(r"(patch_embed\.proj|blocks\.\d+\.[\w.]+|norm)\.(weight|bias)", (r"v.\1.\2",)),
    Rule(r"head_norm\.(weight|bias)", (r"mlp_head.0.\1",)),
    Rule(r"head\.(weight|bias)", (r"mlp_head.1.\1",)),
]
_IGNORED = r"v\.(head|head_dist)\.(weight|bias)"  # timm's ImageNet heads: in the file, never used


def read_ssast(
    path: str | Path,
    window_seconds: float = DEFAULT_WINDOW_SECONDS,
    num_heads: int = SSAST_BASE.num_heads,
    fstride: int = SSAST_BASE.fstride,
    tstride: int = SSAST_BASE.tstride,
    labels: list[str] | None = None,
) -> EncoderCheckpoint:
    """A fine-tuned SSAST .pth (module.v.*, module.mlp_head.*) for windows of `window_seconds` at
    16 kHz (at most 10.24 s: the model takes 1024 frames; a shorter window is padded to them).
    labels: one per class, in the head's order; `class_<i>` when None."""
    path = Path(path)
    where = str(path)
    state = read_torch(path)
    if state and all(key.startswith("module.") for key in state):
        state = {key[len("module.") :]: value for key, value in state.items()}  # saved from DataParallel
    if any(key.startswith(PRETRAINING_KEYS) for key in state):
        raise CheckpointError(
            f"{where}: an SSAST pre-training checkpoint (cpredlayer / gpredlayer / mask_embed keys); only "
            "fine-tuned models (module.mlp_head.*) are supported"
        )
    require(state, "v.cls_token", where, FAMILY)
    require(state, "mlp_head.1.weight", where, FAMILY)
    ast_config = pth_encoder_config(
        state, where, fstride, tstride, SSAST_BASE.input_fdim, SSAST_BASE.input_tdim, num_heads
    )
    encoder = validated(replace(ast_config, pooling=SSAST_BASE.pooling), where)
    converted = convert_state_dict(state, expected_shapes(encoder), _RULES, where=where, ignore=_IGNORED)
    return EncoderCheckpoint(
        frontend=kaldi_frontend(AST_FBANK, encoder, window_seconds, where),
        encoder=encoder,
        state_dict=converted,
        labels=checked_labels(labels, encoder.num_classes, where),
        weights_path=path,
        format=FORMAT,
    )
