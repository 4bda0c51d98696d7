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

from earshot_models.checkpoints.ast import PTH_IGNORED, PTH_RULES, pth_encoder_config
from earshot_models.checkpoints.encoder_checkpoint import EncoderCheckpoint, kaldi_checkpoint, require, validated
from earshot_models.checkpoints.io import CheckpointError, read_torch, strip_data_parallel
from earshot_models.config import SSAST_BASE

FORMAT = "ssast-pth"
KIND = "a fine-tuned SSAST checkpoint"  # in errors: "...; not a fine-tuned SSAST checkpoint?"
DEFAULT_WINDOW_SECONDS = 10.0  # 998 frames of the model's 1024, the rest padded: a 10 s AudioSet clip
PRETRAINING_KEYS = ("cpredlayer.", "gpredlayer.", "mask_embed")


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
    state = strip_data_parallel(read_torch(path))
    if any(key.startswith(PRETRAINING_KEYS) for key in state):
        raise CheckpointError(
            f"{where}: an SSAST pre-training checkpoint (cpredlayer / gpredlayer / mask_embed keys); only "
            "fine-tuned models (module.mlp_head.*) are supported"
        )
    require(state, "v.cls_token", where, KIND)
    require(state, "mlp_head.1.weight", where, KIND)
    ast_config = pth_encoder_config(
        state, where, fstride, tstride, SSAST_BASE.input_fdim, SSAST_BASE.input_tdim, num_heads
    )
    encoder = validated(replace(ast_config, pooling=SSAST_BASE.pooling), where)
    return kaldi_checkpoint(path, state, encoder, PTH_RULES, PTH_IGNORED, window_seconds, labels, FORMAT)
