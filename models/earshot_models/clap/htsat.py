"""HTS-AT, CLAP's audio encoder: log-mel (B, T, M) in dB -> pooled features (B, num_features).

BatchNorm over mel bins (running statistics, as a fixed affine map) -> (T, M) resized bicubically
(align_corners) to (spec_size * r, M), r = spec_size // M -> folded into a spec_size x spec_size
image (the r time chunks stacked along the mel axis) -> patch conv (+ LayerNorm) -> Swin stages
(blocks, then 2 x 2 patch merging between stages) -> LayerNorm -> mean over tokens.
(HTS-AT's token-semantic head and its grouped 2-D pooling reduce to this mean for the clip embedding.)
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from earshot_models.clap.config import HtsatConfig
from earshot_models.clap.swin import PatchMerging, SwinBlock


class MelBatchNorm(nn.Module):
    """x (B, T, M) -> (x - mean[m]) / sqrt(var[m] + eps) * weight[m] + bias[m]: BatchNorm2d over mel
    bins in eval mode, written out so that no training flag can switch it to batch statistics."""

    def __init__(self, num_mel_bins: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_mel_bins))
        self.bias = nn.Parameter(torch.zeros(num_mel_bins))
        self.register_buffer("running_mean", torch.zeros(num_mel_bins))
        self.register_buffer("running_var", torch.ones(num_mel_bins))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)  # (M,)
        return (x - self.running_mean) * scale + self.bias  # (B, T, M)


class SwinStage(nn.Module):
    def __init__(self, config: HtsatConfig, stage: int):
        super().__init__()
        dim = config.embed_dim * 2**stage
        resolution = config.stage_resolution(stage)
        self.blocks = nn.ModuleList(
            SwinBlock(
                dim,
                config.num_heads[stage],
                resolution,
                config.window_size,
                shifted=index % 2 == 1,
                mlp_ratio=config.mlp_ratio,
                qkv_bias=config.qkv_bias,
                eps=config.layer_norm_eps,
            )
            for index in range(config.depths[stage])
        )
        last = stage == len(config.depths) - 1
        self.downsample = None if last else PatchMerging(dim, resolution)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


def time_resize_matrix(frames: int, image_frames: int) -> torch.Tensor:
    """(image_frames, frames) float32: HTS-AT's bicubic resize (align_corners) of (T, M) to (T', M) as
    the linear map it is. The mel axis keeps its size, and with align_corners an unchanged axis is
    sampled at its own points, so only time is mixed; one small matmul instead of ONNX Runtime's
    Resize, which ran 6% of the int8 CLAP graph. Made by resizing the identity in float64."""
    eye = torch.eye(frames, dtype=torch.float64).reshape(1, 1, frames, frames)  # (1, 1, T, T): row t = frame t
    resized = F.interpolate(eye, size=(image_frames, frames), mode="bicubic", align_corners=True)  # (1, 1, T', T)
    return resized[0, 0].to(torch.float32)


class HtsatEncoder(nn.Module):
    def __init__(self, config: HtsatConfig, num_frames: int):
        super().__init__()
        config.validate()
        if num_frames > config.image_frames:
            raise ValueError(f"{num_frames} frames: HTS-AT takes at most {config.image_frames}")
        self.config = config
        self.num_frames = num_frames
        self.batch_norm = MelBatchNorm(config.num_mel_bins, config.batch_norm_eps)
        padding = (config.patch_size - config.patch_stride) // 2
        self.patch_embed = nn.Conv2d(
            1, config.embed_dim, kernel_size=config.patch_size, stride=config.patch_stride, padding=padding
        )
        self.patch_norm = nn.LayerNorm(config.embed_dim, eps=1e-5) if config.patch_norm else nn.Identity()
        self.stages = nn.ModuleList(SwinStage(config, stage) for stage in range(len(config.depths)))
        self.norm = nn.LayerNorm(config.num_features, eps=1e-5)
        if num_frames < config.image_frames:
            self.register_buffer("time_resize", time_resize_matrix(num_frames, config.image_frames), persistent=False)

    def to_image(self, log_mel: torch.Tensor) -> torch.Tensor:
        """(B, T, M) normalised -> (B, 1, spec_size, spec_size): resized to spec_size * r frames, folded."""
        config = self.config
        x = log_mel.unsqueeze(1)  # (B, 1, T, M)
        if self.num_frames < config.image_frames:
            x = torch.matmul(self.time_resize, x)  # (T', T) @ (B, 1, T, M) -> (B, 1, T', M)
        batch, ratio, mels = x.shape[0], config.freq_ratio, config.num_mel_bins
        x = x.reshape(batch, ratio, config.image_frames // ratio, mels)  # (B, r, T'/r, M): r time chunks
        x = x.permute(0, 1, 3, 2)  # (B, r, M, T'/r)
        return x.reshape(batch, 1, ratio * mels, config.image_frames // ratio)  # (B, 1, r*M, T'/r) = square

    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:
        """log_mel (B, T, M) in dB -> (B, num_features)."""
        image = self.to_image(self.batch_norm(log_mel))  # (B, 1, S, S)
        x = self.patch_embed(image).flatten(2).transpose(1, 2)  # (B, G * G, C): row-major patches
        x = self.patch_norm(x)
        for stage in self.stages:
            x = stage(x)
        return self.norm(x).mean(dim=1)  # (B, num_features)
