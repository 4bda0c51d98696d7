"""ExportableModel -> ONNX graph -> precision variant -> parity check -> bundle directory."""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch

from earshot import bundle
from earshot.engine.self_test import write_probe
from earshot_export.exportable import ExportableModel, ExportableText
from earshot_export.fusion import fuse_attention
from earshot_export.parity import (
    FP32_LOGITS_ATOL,
    PARITY_TEXTS,
    ParityError,
    ParityReport,
    check_parity,
    check_text_parity,
    parity_texts,
    parity_windows,
)
from earshot_export.precision import INT8_SCHEME_CHOICE, INT8_SCHEMES, convert_precision

log = logging.getLogger(__name__)

OPSET = 17  # LayerNormalization is a single op from 17 on; TensorRT 8.6+ and ORT 1.16+ read it


def export_bundle(
    model: ExportableModel,
    out_dir: str | Path,
    precision: str = "fp32",
    parity_audio: list[np.ndarray] | None = None,
    overwrite: bool = False,
    fuse: bool = True,
) -> bundle.Bundle:
    """Write `model` as a bundle in `out_dir`; raise ParityError (and write nothing) if parity fails.

    fuse: fuse attention with ONNX Runtime's transformer optimiser (contrib operators; see fusion.py).
    """
    if precision not in bundle.PRECISIONS:
        raise ValueError(f"precision must be one of {bundle.PRECISIONS}, got {precision!r}")
    out_path = Path(out_dir)
    if out_path.exists() and any(out_path.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out_path} exists and is not empty (pass --force to replace it)")
    module = model.module.eval()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".earshot-export-", dir=out_path.parent) as work:
        work_dir = Path(work)
        fp32_path = work_dir / "model.fp32.onnx"
        has_logits = model.num_labels > 0
        trace_to_onnx(module, model.window_samples, has_logits, fp32_path, has_frames=model.frame_grid is not None)
        fused: dict[str, int] = {}
        if fuse:  # ViT attention (attention_heads) and attention with an additive bias (any family)
            fused_path = work_dir / "model.fused.onnx"
            fused = fuse_attention(fp32_path, fused_path, model.attention_heads, model.embedding_dim)
            fp32_path = fused_path
        staging = work_dir / "bundle"
        staging.mkdir()
        final_model = staging / bundle.MODEL_FILE
        waveforms, num_samples = parity_windows(parity_audio, model.window_samples, model.sample_rate)
        # int8: the fastest scheme that is exact on every CPU and passes parity (precision.INT8_SCHEMES)
        schemes = INT8_SCHEMES if precision == "int8" else (None,)
        tried: list[str] = []
        for scheme in schemes:
            convert_precision(fp32_path, final_model, precision, model.keep_float32_scopes, scheme)
            report = check_parity(
                module, final_model, waveforms, num_samples, precision, model.logits_atol or FP32_LOGITS_ATOL
            )
            log.info("parity%s: %s", f" ({scheme})" if scheme else "", report.summary())
            if report.passed:
                break
            tried.append(f"{scheme}: {report.summary()}")
        if not report.passed:
            raise ParityError(report)
        scheme_notes = {"int8_scheme_chosen": scheme, "int8_schemes_failed_parity": tried} if scheme else {}

        text = export_text_tower(model.text, staging, model.embedding_dim, model.labels) if model.text else None

        probe = write_probe(
            staging, final_model, precision, model.window_samples, bundle.Context(), model.sample_rate
        )
        graph_inputs = [i.name for i in onnx.load(str(final_model), load_external_data=False).graph.input]
        manifest = build_manifest(model, precision, report, fused, graph_inputs, probe)
        manifest = dataclasses.replace(manifest, notes={**manifest.notes, **scheme_notes}, text=text)
        written = bundle.write(staging, manifest, model.labels)
        if out_path.exists():
            shutil.rmtree(out_path)
        shutil.move(str(staging), out_path)
    del written  # re-read from its final place, checksums verified
    return bundle.load(out_path, verify=True)


def trace_to_onnx(
    module: torch.nn.Module, window_samples: int, has_logits: bool, path: Path, has_frames: bool = False
) -> None:
    """Export with the TorchScript-based exporter: its node names keep the module path
    ("/frontend/...", "/encoder/blocks.0/attn/..."), which the precision passes use to keep the
    frontend in float32, and its attention pattern is one ONNX Runtime's transformer optimiser fuses."""
    batch = 2
    waveform = torch.zeros(batch, window_samples)  # (B, window_samples)
    num_samples = torch.full((batch,), window_samples, dtype=torch.int64)  # (B,)
    outputs = [bundle.EMBEDDING_OUTPUT] + ([bundle.LOGITS_OUTPUT] if has_logits else [])
    outputs += [bundle.FRAMES_OUTPUT] if has_frames else []
    dynamic_axes = {name: {0: "batch"} for name in [bundle.WAVEFORM_INPUT, bundle.NUM_SAMPLES_INPUT, *outputs]}
    with torch.no_grad():
        torch.onnx.export(
            _OutputsOnly(module, has_logits, has_frames).eval(),  # export restores the wrapper's mode afterwards
            (waveform, num_samples),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=[bundle.WAVEFORM_INPUT, bundle.NUM_SAMPLES_INPUT],
            output_names=outputs,
            dynamic_axes=dynamic_axes,
            do_constant_folding=True,
        )
    onnx.checker.check_model(str(path), full_check=True)


def export_text_tower(
    text: ExportableText, staging: Path, embedding_dim: int, labels: list[str]
) -> bundle.TextTower:
    """text.onnx (float32 in every precision: a query is a few tokens, cheap beside the audio, and
    zero-shot scores stay those of the reference) and tokenizer.json in `staging`, parity checked
    on token ids made the service's way; raises ParityError when it fails."""
    model_path = staging / bundle.TEXT_MODEL_FILE
    texts = parity_texts([text.prompt.format(label) for label in labels], text.max_tokens)
    input_ids, attention_mask = text.tokenize(texts)  # (N, T) each
    with torch.no_grad():
        torch.onnx.export(
            text.module.eval(),
            (input_ids, attention_mask),
            str(model_path),
            dynamo=False,
            opset_version=OPSET,
            input_names=[bundle.INPUT_IDS_INPUT, bundle.ATTENTION_MASK_INPUT],
            output_names=[bundle.TEXT_EMBEDDING_OUTPUT],
            dynamic_axes={
                bundle.INPUT_IDS_INPUT: {0: "batch", 1: "tokens"},
                bundle.ATTENTION_MASK_INPUT: {0: "batch", 1: "tokens"},
                bundle.TEXT_EMBEDDING_OUTPUT: {0: "batch"},
            },
            do_constant_folding=True,
        )
    onnx.checker.check_model(str(model_path), full_check=True)
    report = check_text_parity(text.module, model_path, input_ids, attention_mask)
    log.info("parity: %s", report.summary())
    if not report.passed:
        raise ParityError(report)
    (staging / bundle.TOKENIZER_FILE).write_text(text.tokenizer_json, encoding="utf-8")
    write_text_probe(staging / bundle.TEXT_PROBE_FILE, text, model_path)
    return bundle.TextTower(
        probe_file=bundle.TEXT_PROBE_FILE,
        prompt=text.prompt,
        max_tokens=text.max_tokens,
        pad_id=text.pad_id,
        logit_scale=text.logit_scale,
        precision="fp32",
        inputs=[
            bundle.TensorSpec(bundle.INPUT_IDS_INPUT, "int64", ["batch", "tokens"]),
            bundle.TensorSpec(bundle.ATTENTION_MASK_INPUT, "int64", ["batch", "tokens"]),
        ],
        outputs=[bundle.TensorSpec(bundle.TEXT_EMBEDDING_OUTPUT, "float32", ["batch", embedding_dim])],
        parity=report.to_json(),
    )


def write_text_probe(path: Path, text: ExportableText, model_path: Path) -> None:
    """The text tower's self-test: a few texts, their token ids (made the service's way) and what
    the graph gives for them here (ONNX Runtime, CPU, float32)."""
    import onnxruntime as ort

    texts = list(PARITY_TEXTS[:3])
    input_ids, attention_mask = text.tokenize(texts)  # (N, T) each
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    feeds = {bundle.INPUT_IDS_INPUT: input_ids.numpy(), bundle.ATTENTION_MASK_INPUT: attention_mask.numpy()}
    (embedding,) = session.run([bundle.TEXT_EMBEDDING_OUTPUT], feeds)
    np.savez(path, texts=np.array(texts), input_ids=feeds[bundle.INPUT_IDS_INPUT],
             attention_mask=feeds[bundle.ATTENTION_MASK_INPUT], embedding=embedding)


class _OutputsOnly(torch.nn.Module):
    """Drops the None logits of an embedding-only model, so the graph has exactly the named outputs
    (embedding [, logits] [, frames])."""

    def __init__(self, inner: torch.nn.Module, has_logits: bool, has_frames: bool = False):
        super().__init__()
        self.inner = inner
        self.has_logits = has_logits
        self.has_frames = has_frames

    def forward(self, waveform: torch.Tensor, num_samples: torch.Tensor):
        embedding, logits, *rest = self.inner(waveform, num_samples)
        outputs = [embedding] + ([logits] if self.has_logits else []) + (rest[:1] if self.has_frames else [])
        return tuple(outputs)


def build_manifest(
    model: ExportableModel,
    precision: str,
    report: ParityReport,
    fused: dict[str, int],
    graph_inputs: list[str],
    probe: dict[str, object],
) -> bundle.Manifest:
    """The manifest of an exported graph. Its inputs are the graph's own: the exporter drops
    `num_samples` from a model that never reads it (padding mode "zeros")."""
    inputs = [bundle.TensorSpec(bundle.WAVEFORM_INPUT, "float32", ["batch", model.window_samples])]
    if bundle.NUM_SAMPLES_INPUT in graph_inputs:
        inputs.append(bundle.TensorSpec(bundle.NUM_SAMPLES_INPUT, "int64", ["batch"]))
    outputs = [bundle.TensorSpec(bundle.EMBEDDING_OUTPUT, "float32", ["batch", model.embedding_dim])]
    if model.num_labels:
        outputs.append(bundle.TensorSpec(bundle.LOGITS_OUTPUT, "float32", ["batch", model.num_labels]))
    if model.frame_grid is not None:
        outputs.append(
            bundle.TensorSpec(bundle.FRAMES_OUTPUT, "float32", ["batch", model.frame_grid.count, model.frame_dim])
        )
    return bundle.Manifest(
        name=model.name,
        family=model.family,
        sample_rate=model.sample_rate,
        window_samples=model.window_samples,
        hop_samples=model.hop_samples,
        embedding_dim=model.embedding_dim,
        num_labels=model.num_labels,
        precision=precision,
        padding=model.padding,
        inputs=inputs,
        outputs=outputs,
        tag_activation=model.tag_activation,
        source=dict(model.source),
        parity=report.to_json(),
        probe=probe,
        frame_grid=model.frame_grid,
        notes={
            **model.notes,
            **PRECISION_NOTES[precision],
            "fused_operators": fused or "none: standard ONNX operators only (TensorRT-friendly)",
        },
    )


PRECISION_NOTES = {
    "fp32": {},
    "fp16": {"fp16": "float16 everywhere but the frontend (fbank) and the graph's inputs and outputs"},
    "int8": {
        "int8": "ONNX Runtime dynamic quantisation of the weight MatMuls (7-bit int8 weights, activations "
        "quantised at run time with one scale per batch); frontend, patch-embedding conv and "
        "attention's activation-by-activation MatMuls stay float. Because the activation scale is "
        "per batch, a window's output moves within quantisation noise with its batch-mates.",
        "int8_scheme": INT8_SCHEME_CHOICE,
    },
}
