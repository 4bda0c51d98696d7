"""CLAP checkpoints (transformers ClapModel) -> ExportableModel for `earshot export hf:<clap dir>`.

The bundle's embedding is CLAP's L2-normalised joint audio-text embedding. With labels, each
label's prompt ("This is a sound of {}." by default) is embedded by the text tower once, here,
and the bundle's logits are exp(logit_scale_a) * cos(audio, prompt): zero-shot tags for the
user's own label set.

The text tower (text.onnx + tokenizer.json) is exported whenever the checkpoint has a tokenizer:
text embeddings, zero-shot labels chosen per request, and search by text all use it. Without a
tokenizer the bundle is audio-only, and its notes say so.

tag_activation is "softmax": CLAP's zero-shot scores are a softmax over the label set (how CLAP
was trained, contrastively, and evaluated). A sigmoid of these logits means nothing: they are a
cosine times ~30-100, so every label with a positive cosine would score ~1.
"""

from __future__ import annotations

import dataclasses
import logging

from earshot.bundle import Padding
from earshot_export.exportable import ExportableModel, ExportableText
from earshot_export.loaders.shared import default_name, exportable_model, reference_uri
from earshot_export.parity import COSINE_ATOL
from earshot_models.checkpoints.clap import (
    TOKENIZER_FILES,
    ClapCheckpoint,
    read_clap_checkpoint,
    resolve_directory,
    with_window,
)

log = logging.getLogger(__name__)

FAMILY = "clap"
TAG_ACTIVATION = "softmax"
SUFFIXES: tuple[str, ...] = ()  # a directory or hub id: nothing is cut to make the default bundle name


def padding(checkpoint: ClapCheckpoint) -> Padding:
    mode = checkpoint.frontend.padding
    what = {
        "repeatpad": "tiled a whole number of times, then zero-padded",
        "repeat": "tiled to the end of the window",
        "pad": "zero-padded",
    }[mode]
    return Padding(
        "frames",
        f"CLAP's feature extractor ({mode}): a window whose audio ends early is {what}; the graph does "
        "this from num_samples before its STFT.",
    )


def load_clap(
    reference: str,
    name: str | None = None,
    labels: list[str] | None = None,
    prompt: str | None = None,
    window_seconds: float | None = None,
) -> ExportableModel:
    """A transformers CLAP checkpoint (save_pretrained directory or hub id). labels: zero-shot
    label set (None: embedding-only bundle); prompt: template with one '{}'; window_seconds: at
    most the model's max_length_s (default: that)."""
    directory = resolve_directory(reference)
    with_text = any((directory / name).is_file() for name in TOKENIZER_FILES)
    if not with_text:
        log.warning("%s has no tokenizer: the bundle is audio-only (no text embeddings, no labels per request)", reference)
    checkpoint = read_clap_checkpoint(directory, labels=labels, prompt=prompt, text=with_text)
    if window_seconds is not None:
        checkpoint = with_window(checkpoint, window_seconds)
    frontend = checkpoint.frontend
    encoder = checkpoint.encoder
    model = exportable_model(
        checkpoint,
        frontend,
        name=name or default_name(reference, FAMILY, SUFFIXES),
        family=FAMILY,
        uri=reference_uri(reference),
        embedding_dim=checkpoint.embedding_dim,
        labels=checkpoint.labels,
        padding=padding(checkpoint),
        tag_activation=TAG_ACTIVATION,
        notes={
            "frontend": f"STFT {frontend.n_fft} / hop {frontend.hop_length}, periodic Hann, "
            f"{frontend.num_mel_bins} Slaney mel {frontend.f_min:g}-{frontend.f_max:g} Hz, dB, {frontend.padding}",
            "encoder": f"HTS-AT: Swin on a {encoder.spec_size}x{encoder.spec_size} folded mel image, depths "
            f"{list(encoder.depths)}, width {encoder.embed_dim}-{encoder.num_features}, window {encoder.window_size}, "
            f"projection {checkpoint.embedding_dim}",
            "embedding": "L2-normalised joint audio-text embedding",
            "tags": (
                f"zero-shot: softmax over exp(logit_scale_a) * cos(audio, text) for {len(checkpoint.labels)} prompts"
                if checkpoint.labels
                else "none (export with --labels for zero-shot tags)"
            ),
            "tag_kind": "zero-shot" if checkpoint.labels else "none",
            "prompts": checkpoint.prompts,
            "logit_scale": checkpoint.logit_scale,
            "text": (
                f"text.onnx: the RoBERTa text tower and projection, up to {checkpoint.text.max_tokens} tokens, "
                "float32 in every precision; tokenizer.json for the tokenizers library"
                if checkpoint.text
                else "none: the checkpoint has no tokenizer (audio-only bundle)"
            ),
        },
    )
    model.logits_atol = COSINE_ATOL * checkpoint.logit_scale  # its logits are logit_scale * cosine
    if checkpoint.text is None:
        return model
    text = checkpoint.text
    return dataclasses.replace(
        model,
        text=ExportableText(
            module=text.tower,
            tokenizer_json=text.tokenizer_json,
            tokenize=text.tokenize,
            pad_id=text.pad_id,
            max_tokens=text.max_tokens,
            prompt=text.prompt,
            logit_scale=checkpoint.logit_scale,
        ),
    )
