"""CLAP checkpoints (transformers ClapModel) -> ExportableModel for `earshot export hf:<clap dir>`.

The bundle's embedding is CLAP's L2-normalised joint audio-text embedding. With labels, each
label's prompt ("This is a sound of {}." by default) is embedded by the text tower once, here,
and the bundle's logits are exp(logit_scale_a) * cos(audio, prompt): zero-shot tags for the
user's own label set.

tag_activation is "softmax": CLAP's zero-shot scores are a softmax over the label set (how CLAP
was trained, contrastively, and evaluated). A sigmoid of these logits means nothing: they are a
cosine times ~30-100, so every label with a positive cosine would score ~1.
"""

from __future__ import annotations

from earshot.bundle import Padding
from earshot_export.exportable import ExportableModel
from earshot_export.loaders.shared import default_name, exportable_model, reference_uri
from earshot_models.checkpoints.clap import ClapCheckpoint, read_clap_checkpoint, with_window

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
    checkpoint = read_clap_checkpoint(reference, labels=labels, prompt=prompt)
    if window_seconds is not None:
        checkpoint = with_window(checkpoint, window_seconds)
    frontend = checkpoint.frontend
    encoder = checkpoint.encoder
    return exportable_model(
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
        },
    )
