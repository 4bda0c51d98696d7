"""CLAP's text tower: token ids (B, T) -> L2-normalised text embedding (B, P) in the audio space.

transformers' ClapTextModel (RoBERTa) and ClapProjectionLayer, wrapped rather than rewritten: the
text encoder is a stock RoBERTa that traces to ONNX as it is, and wrapping it keeps
`ClapModel.get_text_features` the definition of the output (`text.onnx` in a CLAP bundle is this
module). Position ids come from the ids themselves (RoBERTa: pad_token_id + 1 + index for real
tokens), so a right-padded batch gives every row the embedding it has alone.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class ClapTextTower(nn.Module):
    def __init__(self, text_model: nn.Module, text_projection: nn.Module):
        super().__init__()
        self.text_model = text_model  # transformers ClapTextModel
        self.text_projection = text_projection  # transformers ClapProjectionLayer

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """input_ids, attention_mask (B, T) int64 -> (B, P) unit norm (get_text_features' pooler_output)."""
        pooled = self.text_model(input_ids=input_ids, attention_mask=attention_mask).pooler_output  # (B, H)
        return F.normalize(self.text_projection(pooled), dim=-1)  # (B, P)

    @classmethod
    def from_clap_model(cls, model: nn.Module) -> ClapTextTower:
        """The text side of a transformers ClapModel (its modules shared, not copied), in eval mode."""
        return cls(model.text_model, model.text_projection).eval()
