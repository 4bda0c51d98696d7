"""Audio-MAE checkpoints (facebookresearch/AudioMAE, the released fine-tuned AudioSet files) -> our ASTEncoder.

The file is `{"model": state_dict}` of `models_vit.VisionTransformer(global_pool=True)` (timm 0.3.2):
`cls_token`, `pos_embed` (1, 1 + N, D), `patch_embed.proj.*` (Conv2d 1 -> D over the (time, mel)
image), `blocks.N.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}.*`, `fc_norm.*`, `head.*`;
no `norm.*` (the reference deletes it with global pooling). Keys map one to one, nothing is
transposed. `pos_embed` holds fixed 2-D sin-cos values in the released files: it is loaded as it
is, never recomputed. Tokens are time-major (t * F' + f), the order of that table.

Not in the file: the number of heads (12 for the released ViT-B; an argument). The patch stride
is read from the position table: 16 (non-overlapping, 64 x 8 over 1024 x 128, the released
models) or 10 (the reference's `use_custom_patch`, 101 x 12). Pre-training checkpoints
(`decoder_*`, `mask_token`) are refused: they have no classifier and a different encoder ending.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from earshot_models.checkpoints.encoder_checkpoint import (
    EncoderCheckpoint,
    count_blocks,
    kaldi_checkpoint,
    require,
    square_patch,
    validated,
)
from earshot_models.checkpoints.io import CheckpointError, read_torch
from earshot_models.checkpoints.mapping import Rule
from earshot_models.config import AUDIOMAE_BASE, EncoderConfig

FORMAT = "audiomae-pth"
KIND = "a fine-tuned Audio-MAE checkpoint"  # in errors: "...; not a fine-tuned Audio-MAE checkpoint?"
DEFAULT_WINDOW_SECONDS = 10.0  # 998 frames of the model's 1024, the rest padded: a 10 s AudioSet clip
PATCH_STRIDES = (16, 10)  # released (non-overlapping), and the reference's use_custom_patch

_RULES = [
    Rule(r"cls_token", (r"cls_token",)),
    Rule(r"pos_embed\.weight", (r"pos_embed",)),
    Rule(r"(patch_embed\.proj|blocks\.\d+\.[\w.]+|fc_norm|head)\.(weight|bias)", (r"\1.\2",)),
]


def encoder_config(state: dict, where: str, num_heads: int) -> EncoderConfig:
    """Our EncoderConfig from the tensor shapes of an Audio-MAE classifier state dict."""
    if any(key.startswith(("decoder_", "mask_token")) for key in state):
        raise CheckpointError(
            f"{where}: an Audio-MAE pre-training checkpoint (decoder_* / mask_token keys); only the fine-tuned "
            "classifiers (fc_norm.*, head.*) are supported"
        )
    embed_dim = int(require(state, "cls_token", where, KIND).shape[-1])
    require(state, "patch_embed.proj.weight", where, KIND)
    require(state, "fc_norm.weight", where, KIND)
    positions = int(require(state, "pos_embed", where, KIND).shape[1])
    head = state.get("head.weight")
    config = replace(
        AUDIOMAE_BASE,
        patch_size=square_patch(state, "patch_embed.proj.weight", where),
        embed_dim=embed_dim,
        depth=count_blocks(state, ""),
        num_heads=num_heads,
        mlp_hidden_dim=int(require(state, "blocks.0.mlp.fc1.weight", where, KIND).shape[0]),
        qkv_bias="blocks.0.attn.qkv.bias" in state,
        num_classes=int(head.shape[0]) if head is not None else 0,
    )
    grids = {}
    for stride in PATCH_STRIDES:
        candidate = replace(config, fstride=stride, tstride=stride)
        grids[stride] = candidate.num_patches
        if min(candidate.grid) > 0 and candidate.num_prefix + candidate.num_patches == positions:
            return validated(candidate, where)
    made = ", ".join(f"stride {stride}: 1 + {count}" for stride, count in grids.items())
    raise CheckpointError(
        f"{where}: key 'pos_embed' has {positions} positions, which fits no patch grid over "
        f"{config.input_tdim} x {config.input_fdim} ({made})"
    )


def read_audiomae(
    path: str | Path,
    window_seconds: float = DEFAULT_WINDOW_SECONDS,
    num_heads: int = AUDIOMAE_BASE.num_heads,
    labels: list[str] | None = None,
) -> EncoderCheckpoint:
    """A fine-tuned Audio-MAE .pth for windows of `window_seconds` at 16 kHz (at most 10.24 s:
    the model takes 1024 frames; a shorter window is padded to them as the reference pads a short
    clip). labels: one per class, in the head's order; `class_<i>` when None."""
    path = Path(path)
    where = str(path)
    state = read_torch(path)
    encoder = encoder_config(state, where, num_heads)
    return kaldi_checkpoint(path, state, encoder, _RULES, None, window_seconds, labels, FORMAT)
