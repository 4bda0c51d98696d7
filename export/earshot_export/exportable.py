"""What a checkpoint loader hands to the exporter: a waveform-in PyTorch module and its metadata."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from earshot.bundle import FrameGrid, Padding


@dataclass
class ExportableText:
    """A text tower in the audio embedding's space (CLAP), exported beside the audio graph.

    module.forward(input_ids, attention_mask) -> text_embedding
      input_ids, attention_mask  int64 [batch, tokens], right-padded with pad_id (mask 0)
      text_embedding             float32 [batch, embedding_dim], unit norm
    tokenize(texts) gives those inputs the way the service makes them (from tokenizer_json).
    """

    module: torch.nn.Module
    tokenizer_json: str
    tokenize: Callable[[list[str]], tuple[torch.Tensor, torch.Tensor]]
    pad_id: int
    max_tokens: int
    prompt: str
    logit_scale: float  # exp(logit_scale_a): zero-shot logits are logit_scale * cos(audio, prompt)


@dataclass
class ExportableModel:
    """A loaded checkpoint, ready for `earshot export`.

    module.forward(waveform, num_samples) -> (embedding, logits | None)
      waveform    float32 [batch, window_samples], mono at sample_rate, full scale 1.0 (exported
                  models read no context around their window: the bundle's input_samples is the window)
      num_samples int64   [batch], real samples at the start of each window (the rest is zeros)
      embedding   float32 [batch, embedding_dim]
      logits      float32 [batch, num_labels] (None where the model has no tagging head)
    The frontend is inside the module, so the exported graph takes the raw waveform.
    """

    module: torch.nn.Module
    name: str
    family: str
    sample_rate: int
    window_samples: int
    hop_samples: int
    embedding_dim: int
    labels: list[str]
    padding: Padding
    source: dict[str, Any]  # {"uri": ..., "sha256": ..., "format": ...}
    tag_activation: str = "sigmoid"
    # ONNX node-name scopes (substrings) that must stay float32 in fp16/int8 variants (the frontend)
    keep_float32_scopes: tuple[str, ...] = ("/frontend/",)
    # ViT-style encoders: heads of each attention layer, so the exporter can fuse attention with
    # ONNX Runtime's transformer optimiser (0: leave the graph as traced)
    attention_heads: int = 0
    notes: dict[str, Any] = field(default_factory=dict)
    text: ExportableText | None = None  # CLAP's text tower -> text.onnx + tokenizer.json
    # models with frame features: module.forward returns (embedding, logits | None, frames (B, T, frame_dim))
    frame_grid: FrameGrid | None = None
    frame_dim: int = 0
    # fp32 parity's bound on |logits diff| (None: parity.FP32_LOGITS_ATOL); zero-shot heads, whose
    # logits are a scaled cosine, set parity.COSINE_ATOL * their scale
    logits_atol: float | None = None

    @property
    def num_labels(self) -> int:
        return len(self.labels)
