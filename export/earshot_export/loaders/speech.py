"""Waveform speech encoders (wav2vec 2.0, HuBERT, data2vec-audio, UniSpeech-SAT, WavLM) -> ExportableModel
for `earshot export hf:<dir>` (earshot_models.speech; converters in earshot_models.checkpoints.speech).

The bundle returns the clip embedding (the mean over frames of a chosen layer's hidden states,
default the last; `--layer N` or `--layer mean` over layers 1..L, since SUPERB finds middle layers
often serve speaker and emotion tasks best) and the frames themselves (batch, frames, dim) at the
model's rate (20 ms: 320 samples at 16 kHz), each on the frame grid the manifest records.

Windows: 10 s by default (`--window-seconds`), with a hop of the window's whole frames (the conv
stack gives floor((W - receptive) / frame_hop) + 1 frames: 499 of 20 ms in 10 s, so the hop is
9.98 s), so that consecutive windows' frames tile the clip's frame grid with neither gap nor
overlap, as one long pass would lay them out. A window that runs past the clip's end is
what transformers computes on a zero-padded batch without an attention mask (the way the group-norm
"base" checkpoints are run): the feature extractor's normalisation (do_normalize) uses the real
samples only and the padding stays zero; the embedding pools the frames that start within the
real audio, the frames the service returns for that window. (Checkpoints run with an attention
mask, the layer-norm "large" ones, differ from that on the last window only.)
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from earshot.bundle import FrameGrid, Padding
from earshot_export.exportable import ExportableModel
from earshot_export.loaders.shared import default_name, reference_uri
from earshot_models.checkpoints.speech import SpeechCheckpoint, read_speech_checkpoint
from earshot_models.speech.config import HEAD_LAYER_MEAN, NORMALIZE_EPS
from earshot_models.speech.model import SpeechEmbeddingHead, SpeechEmbeddingModel, SpeechEncoder

MODEL_TYPES = ("wav2vec2", "hubert", "data2vec-audio", "unispeech-sat", "wavlm")
DEFAULT_WINDOW_SECONDS = 10.0
SUFFIXES: tuple[str, ...] = ()


class SpeechWindowModel(nn.Module):
    """(waveform (B, W), num_samples (B,)) -> (embedding (B, D), None, frames (B, T, D))."""

    def __init__(self, model: SpeechEmbeddingModel, normalize: bool, hop_samples: int):
        super().__init__()
        self.model = model  # built with its own normalisation off: it is done here, over real samples
        self.normalize = normalize
        self.hop_samples = hop_samples

    def forward(self, waveform: torch.Tensor, num_samples: torch.Tensor):
        positions = torch.arange(waveform.shape[1], device=waveform.device)  # (W,)
        real = (positions[None, :] < num_samples[:, None]).to(waveform.dtype)  # (B, W)
        x = waveform * real
        if self.normalize:
            count = real.sum(dim=1, keepdim=True).clamp(min=1.0)  # (B, 1)
            mean = x.sum(dim=1, keepdim=True) / count  # (B, 1)
            centred = (x - mean) * real  # (B, W)
            var = (centred * centred).sum(dim=1, keepdim=True) / count  # population variance, (B, 1)
            x = centred / torch.sqrt(var + NORMALIZE_EPS)  # (B, W), zeros past the real samples
        _, frames = self.model(x)  # (B, T, D)
        starts = torch.arange(frames.shape[1], device=frames.device) * self.hop_samples  # (T,)
        real_frames = (starts[None, :] < num_samples[:, None]).to(frames.dtype)  # (B, T)
        count_frames = real_frames.sum(dim=1, keepdim=True).clamp(min=1.0)  # (B, 1)
        embedding = (frames * real_frames[:, :, None]).sum(dim=1) / count_frames  # (B, D)
        return embedding, None, frames


def build_window_model(checkpoint: SpeechCheckpoint, layer: int | str | None) -> SpeechWindowModel:
    config = checkpoint.config
    encoder = SpeechEncoder(dataclasses.replace(config, normalize=False))
    encoder.load_state_dict(checkpoint.state_dict, strict=True)
    model = SpeechEmbeddingModel(encoder, SpeechEmbeddingHead(config.num_layers, layer))
    return SpeechWindowModel(model, config.normalize, config.hop_samples).eval()


def parse_layer(value: str | None) -> int | str | None:
    if value is None or value == HEAD_LAYER_MEAN:
        return value
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"--layer must be a layer number or {HEAD_LAYER_MEAN!r}; got {value!r}") from None


def load_speech(
    reference: str, name: str | None = None, window_seconds: float | None = None, layer: str | None = None
) -> ExportableModel:
    checkpoint = read_speech_checkpoint(reference)
    config = checkpoint.config
    chosen = parse_layer(layer)
    window_samples = int(round((window_seconds or DEFAULT_WINDOW_SECONDS) * config.sample_rate))
    if window_samples < config.receptive_field:
        raise ValueError(f"a window of {window_samples} samples is shorter than one frame ({config.receptive_field})")
    module = build_window_model(checkpoint, chosen)
    layer_words = (
        f"the mean over layers 1..{config.num_layers}" if chosen == HEAD_LAYER_MEAN
        else f"layer {config.num_layers if chosen is None else chosen} of {config.num_layers}"
    )
    return ExportableModel(
        module=module,
        name=name or default_name(reference, config.family, SUFFIXES),
        family=config.family,
        sample_rate=config.sample_rate,
        window_samples=window_samples,
        hop_samples=config.num_frames(window_samples) * config.hop_samples,  # whole frames: the grid tiles
        embedding_dim=config.hidden_size,
        labels=[],
        padding=Padding("frames", "zero-padded; normalised over the real samples, frames pooled where they start "
                        "within them (loaders/speech.py)"),
        source={"uri": reference_uri(reference), "sha256": checkpoint.sha256(), "format": checkpoint.format},
        tag_activation="none",
        keep_float32_scopes=("/model/encoder/feature_encoder/",),
        frame_grid=FrameGrid(
            hop_samples=config.hop_samples, receptive_samples=config.receptive_field,
            count=config.num_frames(window_samples),
        ),
        frame_dim=config.hidden_size,
        notes={
            "encoder": f"{config.family}: {config.num_layers} layers, {config.hidden_size} wide, "
            f"{'pre-LN (stable layer norm)' if config.stable_layer_norm else 'post-LN'}, "
            f"{config.conv_norm}-norm feature encoder"
            + (", gated relative position bias" if config.relative_position else ""),
            "embedding": f"mean over frames of {layer_words}",
            "frames": f"{layer_words}: every {config.hop_samples} samples ({config.hop_samples / config.sample_rate * 1000:g} ms), "
            f"{config.receptive_field}-sample receptive field",
            "windows": f"{window_samples / config.sample_rate:g} s, hop {config.num_frames(window_samples)} frames "
            f"({config.num_frames(window_samples) * config.hop_samples / config.sample_rate:g} s): frames tile the clip",
            "normalize": "zero mean, unit variance per window (the feature extractor's do_normalize)"
            if config.normalize else "none (the feature extractor's do_normalize is false)",
            "tags": "none",
            "tag_kind": "none",
        },
    )
