"""The recipes of ../shared/golden/README.md for PaSST, Audio-MAE and SSAST, written out directly
(float64 frontends, plain torch ops on the checkpoint's own keys), independently of earshot's
modules: the reference our models are held to on configurations the golden files do not cover.
Also: random checkpoints in each family's published layout, and clips at any rate.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import soundfile
import soxr
import torch
from torch.nn import functional as F

# -- clips ------------------------------------------------------------------------------------------


def read_clip(path: Path, rate: int) -> np.ndarray:
    """Mono float32 at `rate`, decoded as the service decodes (soundfile, mean of channels, soxr)."""
    audio, source_rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    mono = audio.mean(axis=1)
    if source_rate != rate:
        mono = soxr.resample(mono, source_rate, rate)
    return np.ascontiguousarray(mono, dtype=np.float32)


def golden_arrays(checkpoint: Path) -> dict[str, np.ndarray]:
    """The reference arrays ../shared/golden keeps beside a checkpoint, in `<stem>-golden.npz`."""
    return dict(np.load(checkpoint.with_name(f"{checkpoint.stem}-golden.npz")))


def fit(wave: np.ndarray, samples: int) -> np.ndarray:
    out = np.zeros(samples, dtype=np.float32)
    out[: min(samples, len(wave))] = wave[:samples]
    return out


# -- frontends (float64) -----------------------------------------------------------------------------


def _mel(hz):
    return 1127.0 * np.log(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def kaldi_mel_matrix(num_bins: int, n_fft: int, rate: int, low: float, high: float) -> np.ndarray:
    """(num_bins, n_fft // 2 + 1), Nyquist column zero."""
    edges = _mel(low) + np.arange(num_bins + 2) * (_mel(high) - _mel(low)) / (num_bins + 1)
    bins = _mel(np.arange(n_fft // 2) * rate / n_fft)
    matrix = np.zeros((num_bins, n_fft // 2 + 1))
    for m in range(num_bins):
        up = (bins - edges[m]) / (edges[m + 1] - edges[m])
        down = (edges[m + 2] - bins) / (edges[m + 2] - edges[m + 1])
        matrix[m, : n_fft // 2] = np.maximum(0.0, np.minimum(up, down))
    return matrix


def ast_dataloader_fbank(wave: np.ndarray, target_frames: int = 1024) -> np.ndarray:
    """AST's dataloader (Audio-MAE, SSAST) on one clip: (target_frames, 128) (time, mel)."""
    w = wave.astype(np.float64)
    w = w - w.mean()
    count = 1 + (len(w) - 400) // 160
    frames = np.stack([w[i * 160 : i * 160 + 400] for i in range(count)])  # (T, 400)
    frames = frames - frames.mean(axis=1, keepdims=True)
    previous = np.concatenate([frames[:, :1], frames[:, :-1]], axis=1)
    frames = frames - 0.97 * previous
    frames = frames * (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 399))
    power = np.abs(np.fft.rfft(frames, n=512)) ** 2  # (T, 257)
    mel = power @ kaldi_mel_matrix(128, 512, 16000, 20.0, 8000.0).T
    fbank = np.log(np.maximum(mel, 1.1920928955078125e-07))
    fbank = np.pad(fbank, ((0, max(0, target_frames - count)), (0, 0)))[:target_frames]
    return (fbank + 4.2677393) / (2 * 4.5689974)


def passt_mel(wave: np.ndarray) -> np.ndarray:
    """PaSST's AugmentMelSTFT (eval) on one 32 kHz clip: (frames, 128) (time, mel)."""
    x = torch.from_numpy(wave.astype(np.float64))
    y = x[1:] - 0.97 * x[:-1]
    window = torch.hann_window(800, periodic=False, dtype=torch.float64)
    spec = torch.stft(y, 1024, hop_length=320, win_length=800, window=window, center=True, pad_mode="reflect",
                      normalized=False, return_complex=True)
    power = (spec.abs() ** 2).numpy()  # (513, T)
    mel = kaldi_mel_matrix(128, 1024, 32000, 0.0, 15000.0) @ power
    return ((np.log(mel + 1e-5) + 4.5) / 5.0).T


# -- encoders (float32 torch, on the checkpoint's keys) --------------------------------------------


def _blocks(x: torch.Tensor, state: dict, prefix: str, heads: int) -> torch.Tensor:
    depth = len({m.group(1) for k in state if (m := re.fullmatch(rf"{re.escape(prefix)}blocks\.(\d+)\..*", k))})
    for i in range(depth):
        p = lambda name: state[f"{prefix}blocks.{i}.{name}"]  # noqa: E731, B023 (used in this iteration only)
        h = F.layer_norm(x, x.shape[-1:], p("norm1.weight"), p("norm1.bias"), eps=1e-6)
        batch, tokens, dim = h.shape
        qkv = F.linear(h, p("attn.qkv.weight"), p("attn.qkv.bias")).reshape(batch, tokens, 3, heads, dim // heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        attention = (q @ k.transpose(-2, -1) / math.sqrt(dim // heads)).softmax(-1)
        h = (attention @ v).transpose(1, 2).reshape(batch, tokens, dim)
        x = x + F.linear(h, p("attn.proj.weight"), p("attn.proj.bias"))
        h = F.layer_norm(x, x.shape[-1:], p("norm2.weight"), p("norm2.bias"), eps=1e-6)
        h = F.gelu(F.linear(h, p("mlp.fc1.weight"), p("mlp.fc1.bias")))
        x = x + F.linear(h, p("mlp.fc2.weight"), p("mlp.fc2.bias"))
    return x


def passt_forward(state: dict, mel: torch.Tensor, heads: int, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """mel (B, T, 128) -> (embedding, logits)."""
    x = F.conv2d(mel.transpose(1, 2)[:, None], state["patch_embed.proj.weight"], state["patch_embed.proj.bias"],
                 stride=stride)  # (B, D, F', T')
    x = x + state["time_new_pos_embed"][..., : x.shape[-1]] + state["freq_new_pos_embed"]
    x = x.flatten(2).transpose(1, 2)
    batch = x.shape[0]
    cls = (state["cls_token"] + state["new_pos_embed"][:, :1]).expand(batch, -1, -1)
    dist = (state["dist_token"] + state["new_pos_embed"][:, 1:]).expand(batch, -1, -1)
    x = _blocks(torch.cat([cls, dist, x], 1), state, "", heads)
    x = F.layer_norm(x, x.shape[-1:], state["norm.weight"], state["norm.bias"], eps=1e-6)
    embedding = (x[:, 0] + x[:, 1]) / 2
    head = F.layer_norm(embedding, embedding.shape[-1:], state["head.0.weight"], state["head.0.bias"], eps=1e-5)
    return embedding, F.linear(head, state["head.1.weight"], state["head.1.bias"])


def audiomae_forward(state: dict, fbank: torch.Tensor, heads: int, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """fbank (B, 1024, 128) -> (embedding, logits)."""
    x = F.conv2d(fbank[:, None], state["patch_embed.proj.weight"], state["patch_embed.proj.bias"], stride=stride)
    x = x.flatten(2).transpose(1, 2) + state["pos_embed"][:, 1:]  # time-major
    cls = (state["cls_token"] + state["pos_embed"][:, :1]).expand(x.shape[0], -1, -1)
    x = _blocks(torch.cat([cls, x], 1), state, "", heads)
    pooled = x[:, 1:].mean(1)
    embedding = F.layer_norm(pooled, pooled.shape[-1:], state["fc_norm.weight"], state["fc_norm.bias"], eps=1e-6)
    return embedding, F.linear(embedding, state["head.weight"], state["head.bias"])


def ssast_forward(state: dict, fbank: torch.Tensor, heads: int, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """fbank (B, 1024, 128) -> (embedding, logits); `state` with its `module.` keys."""
    s = {k[len("module.") :]: v for k, v in state.items()}
    x = F.conv2d(fbank.transpose(1, 2)[:, None], s["v.patch_embed.proj.weight"], s["v.patch_embed.proj.bias"],
                 stride=stride)
    x = x.flatten(2).transpose(1, 2)
    batch = x.shape[0]
    x = torch.cat([s["v.cls_token"].expand(batch, -1, -1), s["v.dist_token"].expand(batch, -1, -1), x], 1)
    x = _blocks(x + s["v.pos_embed"], s, "v.", heads)
    x = F.layer_norm(x, x.shape[-1:], s["v.norm.weight"], s["v.norm.bias"], eps=1e-6)
    embedding = x[:, 2:].mean(1)
    head = F.layer_norm(embedding, embedding.shape[-1:], s["mlp_head.0.weight"], s["mlp_head.0.bias"], eps=1e-5)
    return embedding, F.linear(head, s["mlp_head.1.weight"], s["mlp_head.1.bias"])


# -- random checkpoints in the published layouts ------------------------------------------------------


def _random(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    """Unit-scale weights, as ../shared/golden: matrices N(0, 1/fan_in), norm weights 1 + N(0, 0.3),
    biases N(0, 0.1), tokens and position tables N(0, 0.5)."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        noise = torch.randn(shape, generator=generator)
        if "token" in key or "pos_embed" in key:
            state[key] = 0.5 * noise
        elif key.endswith("bias"):
            state[key] = 0.1 * noise
        elif len(shape) == 1:
            state[key] = 1.0 + 0.3 * noise
        else:
            state[key] = noise / math.sqrt(math.prod(shape[1:]))
    return state


def _block_shapes(prefix: str, depth: int, dim: int, hidden: int) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for i in range(depth):
        b = f"{prefix}blocks.{i}."
        shapes.update({
            b + "norm1.weight": (dim,), b + "norm1.bias": (dim,),
            b + "attn.qkv.weight": (3 * dim, dim), b + "attn.qkv.bias": (3 * dim,),
            b + "attn.proj.weight": (dim, dim), b + "attn.proj.bias": (dim,),
            b + "norm2.weight": (dim,), b + "norm2.bias": (dim,),
            b + "mlp.fc1.weight": (hidden, dim), b + "mlp.fc1.bias": (hidden,),
            b + "mlp.fc2.weight": (dim, hidden), b + "mlp.fc2.bias": (dim,),
        })  # fmt: skip
    return shapes


def passt_state(seed: int, dim: int, depth: int, classes: int, stride: int, table_frames: int) -> dict:
    f_dim, t_dim = (128 - 16) // stride + 1, (table_frames - 16) // stride + 1
    shapes = {
        "cls_token": (1, 1, dim), "dist_token": (1, 1, dim), "new_pos_embed": (1, 2, dim),
        "freq_new_pos_embed": (1, dim, f_dim, 1), "time_new_pos_embed": (1, dim, 1, t_dim),
        "patch_embed.proj.weight": (dim, 1, 16, 16), "patch_embed.proj.bias": (dim,),
        **_block_shapes("", depth, dim, 2 * dim),
        "norm.weight": (dim,), "norm.bias": (dim,),
        "head.0.weight": (dim,), "head.0.bias": (dim,), "head.1.weight": (classes, dim), "head.1.bias": (classes,),
        "head_dist.weight": (classes, dim), "head_dist.bias": (classes,),
    }  # fmt: skip
    return _random(shapes, seed)


def audiomae_state(seed: int, dim: int, depth: int, classes: int, stride: int) -> dict:
    grid = ((1024 - 16) // stride + 1) * ((128 - 16) // stride + 1)
    shapes = {
        "cls_token": (1, 1, dim), "pos_embed": (1, 1 + grid, dim),
        "patch_embed.proj.weight": (dim, 1, 16, 16), "patch_embed.proj.bias": (dim,),
        **_block_shapes("", depth, dim, 2 * dim),
        "fc_norm.weight": (dim,), "fc_norm.bias": (dim,), "head.weight": (classes, dim), "head.bias": (classes,),
    }  # fmt: skip
    return _random(shapes, seed)


def ssast_state(seed: int, dim: int, depth: int, classes: int, stride: int) -> dict:
    grid = ((1024 - 16) // stride + 1) * ((128 - 16) // stride + 1)
    shapes = {
        "v.cls_token": (1, 1, dim), "v.dist_token": (1, 1, dim), "v.pos_embed": (1, 2 + grid, dim),
        "v.patch_embed.proj.weight": (dim, 1, 16, 16), "v.patch_embed.proj.bias": (dim,),
        **_block_shapes("v.", depth, dim, 2 * dim),
        "v.norm.weight": (dim,), "v.norm.bias": (dim,),
        "v.head.weight": (1000, dim), "v.head.bias": (1000,), "v.head_dist.weight": (1000, dim),
        "v.head_dist.bias": (1000,),
        "mlp_head.0.weight": (dim,), "mlp_head.0.bias": (dim,), "mlp_head.1.weight": (classes, dim),
        "mlp_head.1.bias": (classes,),
    }  # fmt: skip
    return {"module." + key: value for key, value in _random(shapes, seed).items()}
