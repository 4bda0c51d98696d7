"""Helpers of the CLAP tests: a tiny random transformers ClapModel saved with save_pretrained, with a
feature extractor config (laion/clap-htsat-unfused's values) and a small word-level tokenizer."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from tests.models import variant_references

SAMPLE_RATE = 48000
WORDS = ("This", "this", "is", "a", "sound", "of", "speech", "music", "bird", "dog", "rain", "the", ".")
# laion/clap-htsat-unfused's preprocessor_config.json, in the fields ClapFeatureExtractor reads
UNFUSED_EXTRACTOR = dict(
    feature_size=64,
    sampling_rate=SAMPLE_RATE,
    hop_length=480,
    max_length_s=10,
    fft_window_size=1024,
    frequency_min=50,
    frequency_max=14000,
    top_db=None,
    truncation="rand_trunc",
    padding="repeatpad",
)
# HTS-AT at the real input geometry (64 mel, 256 x 256 image), narrow and shallow, every Swin path:
# stage 0 (64 x 64 tokens) and stage 2 (16 x 16) have a shifted second block with its mask; stage 2's
# grid is no larger than the window, so it is neither shifted nor cut into windows (Swin's rule).
TINY_AUDIO = dict(
    spec_size=256,
    num_mel_bins=64,
    patch_size=4,
    patch_stride=4,
    patch_embeds_hidden_size=16,
    depths=[2, 1, 2],
    num_attention_heads=[2, 2, 4],
    window_size=16,
    hidden_size=64,  # patch_embeds_hidden_size * 2 ** (stages - 1)
    projection_hidden_size=48,
    enable_fusion=False,
)
TINY_TEXT = dict(
    vocab_size=len(WORDS) + 4,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    max_position_embeddings=40,
    projection_hidden_size=48,
)


def read_clip(path: Path) -> np.ndarray:
    """Mono float32 at 48 kHz, the way the service decodes (variant_references.read_clip)."""
    return variant_references.read_clip(path, SAMPLE_RATE)


def randomise(model: torch.nn.Module, seed: int) -> None:
    """Unit-scale random weights (matrices N(0, 1/fan_in), norms 1 + N(0, 0.3), biases N(0, 0.1)),
    batch-norm statistics included, so that no path hides behind an init of zeros and ones."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            if not tensor.is_floating_point() or "position_ids" in name or name.endswith("logit_scale_t"):
                continue
            noise = torch.randn(tensor.shape, generator=generator)
            if name.endswith("logit_scale_a"):
                tensor.copy_(torch.tensor(math.log(30.0)))
            elif name.endswith("running_var"):
                tensor.copy_(1.0 + noise.abs())
            elif name.endswith("running_mean"):
                tensor.copy_(-40.0 + 10.0 * noise)  # dB-scale mel statistics
            elif name.endswith("bias"):
                tensor.copy_(0.1 * noise)
            elif tensor.ndim == 1:
                tensor.copy_(1.0 + 0.3 * noise)
            elif tensor.ndim == 0:
                continue
            else:
                tensor.copy_(noise / math.sqrt(tensor[0].numel()))


def save_tokenizer(directory: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, **{word: 4 + i for i, word in enumerate(WORDS)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation()])
    tokenizer.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    fast.save_pretrained(directory)


def make_clap_dir(directory: Path, seed: int = 0, **extractor_overrides) -> torch.nn.Module:
    """A save_pretrained CLAP directory at `directory`; returns the model (eval)."""
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel

    config = ClapConfig(text_config=TINY_TEXT, audio_config=TINY_AUDIO, projection_dim=24)
    model = ClapModel(config)
    randomise(model, seed)
    model.eval()
    model.save_pretrained(directory)
    ClapFeatureExtractor(**{**UNFUSED_EXTRACTOR, **extractor_overrides}).save_pretrained(directory)
    save_tokenizer(directory)
    return model
