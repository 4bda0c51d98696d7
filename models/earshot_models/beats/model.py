"""Waveform in, embedding and logits out, for BEATs: the frontend, the padding mask, the encoder.

A window whose audio ends early (the last window of a clip) is zero-padded by the engine and
`num_samples` says how much is real. BEATs run on that clip alone sees only its whole patches;
here a time patch counts as real when all its 16 frames end within the real samples, and the
rest are zeroed before the position conv, masked out of every attention (keys) and out of the
mean. Every real token then gets exactly what it gets on the clip alone. The first patch is always
real, so a clip shorter than one patch is the clip zero-padded to one patch.
"""

from __future__ import annotations

import torch
from torch import nn

from earshot_models.beats.encoder import BeatsEncoder
from earshot_models.frontend.kaldi_fbank import KaldiFbank


class BeatsWaveformModel(nn.Module):
    """forward(waveform (B, N) float32, num_samples (B,) int64) -> (embedding (B, D), logits (B, C) | None).

    The frontend stays the submodule named `frontend` (the exporter keeps "/frontend/" in float32).
    """

    def __init__(self, frontend: KaldiFbank, encoder: BeatsEncoder):
        super().__init__()
        self.frontend = frontend
        self.encoder = encoder
        fbank, config = frontend.config, encoder.config
        if (fbank.num_frames, fbank.num_mel_bins) != (config.input_tdim, config.input_fdim):
            raise ValueError("the frontend's frames and mel bins must be the encoder's input size")
        time_patches, mel_patches = config.grid
        last_frame = torch.arange(1, time_patches + 1, dtype=torch.int64) * config.patch_size - 1  # (T',)
        patch_end = last_frame * fbank.frame_shift + fbank.frame_length  # (T',): samples a patch needs
        patch_end[0] = 0  # the first patch is always real
        self.register_buffer("token_end", patch_end.repeat_interleave(mel_patches), persistent=False)  # (N,)

    def token_real(self, num_samples: torch.Tensor) -> torch.Tensor:
        """num_samples (B,) -> (B, N) bool: tokens whose whole patch lies within the real samples."""
        return self.token_end.unsqueeze(0) <= num_samples.unsqueeze(1)  # (B, N)

    def forward(self, waveform: torch.Tensor, num_samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        fbank = self.frontend(waveform, num_samples)  # (B, T, F)
        return self.encoder(fbank, self.token_real(num_samples))  # through __call__: node names "/encoder/..."
