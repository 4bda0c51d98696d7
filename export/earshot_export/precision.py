"""fp32 / fp16 / int8 variants of an exported float32 graph.

- fp16: every node outside the frontend runs in float16; the frontend (fbank: large sums of
  squared samples, a log) and the graph's inputs and outputs stay float32.
- int8: ONNX Runtime dynamic quantisation of the MatMuls that multiply by a weight, and of fused
  Attention nodes' projections (int8 weights, activations quantised per batch at run time); the
  patch-embedding conv, the frontend and attention's activation-by-activation products stay float.
  Weights use 7 bits (`reduce_range`, |q| <= 64), so the u8 x s8 products sum exactly on every CPU:
  with full int8 weights, AVX2 CPUs without VNNI saturate their int16 pair sums and give other
  numbers than VNNI CPUs (service/engine/int8.py). Measured on this project's machines: see
  INT8_SCHEME_CHOICE.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import onnx

INT8_SCHEME_CHOICE = (
    "int8 weights with reduce_range (7 bits, |q| <= 64) times uint8 activations: exact int32 sums on every x86 CPU "
    "(two products reach at most 2 * 255 * 64 = 32640, inside VPMADDUBSW's int16), so the same graph gives the same "
    "integers on AVX2 and on AVX-512 VNNI, at VNNI's speed. Full-range int8 weights (the former scheme) saturate on "
    "AVX2 without VNNI (BEATs embeddings at cosine 0.9846 between the two CPUs); uint8 weights are exact too but run "
    "no faster than fp32 on VNNI CPUs (no u8 x u8 form). Where 7 bits per tensor fail parity, one scale per output "
    "channel, then uint8 weights (INT8_SCHEMES). Measured speed and fidelity: loadtest/bench_int8.py, BENCHMARKS.md."
)


# int8 weight schemes, fastest first; each sums exactly on every CPU (service/engine/int8.py).
# The exporter takes the first that passes parity and records which in the manifest.
INT8_SCHEMES = (
    "s7",  # int8 weights in 7 bits (reduce_range), one scale per tensor: VNNI-fast, no AVX2 saturation
    "s7-per-channel",  # the same with one scale per output channel: finer where rows differ in range
    "u8",  # uint8 weights in 8 bits: u8u8 kernels, exact everywhere, no faster than fp32 on VNNI CPUs
)


def convert_precision(
    fp32_path: Path, out_path: Path, precision: str, keep_float32_scopes: tuple[str, ...], scheme: str | None = None
) -> None:
    if precision == "fp32":
        shutil.copyfile(fp32_path, out_path)
    elif precision == "fp16":
        to_fp16(fp32_path, out_path, keep_float32_scopes)
    elif precision == "int8":
        to_int8(fp32_path, out_path, keep_float32_scopes, scheme or INT8_SCHEMES[0])
    else:
        raise ValueError(f"unknown precision {precision!r}")


def nodes_in_scopes(graph: onnx.GraphProto, scopes: tuple[str, ...]) -> list[str]:
    """Names of the nodes whose name contains one of the module scopes (e.g. "/frontend/")."""
    return [node.name for node in graph.node if any(scope in node.name for scope in scopes)]


def to_fp16(fp32_path: Path, out_path: Path, keep_float32_scopes: tuple[str, ...]) -> None:
    # ONNX Runtime's own model wrapper: its symbolic shape inference knows the contrib operators
    # (fused Attention) that onnx's shape inference does not, so the casts land where they belong.
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = OnnxModel(onnx.load(str(fp32_path)))
    keep = nodes_in_scopes(model.model.graph, keep_float32_scopes)
    model.convert_float_to_float16(use_symbolic_shape_infer=True, keep_io_types=True, node_block_list=keep)
    onnx.save(model.model, str(out_path))


def to_int8(fp32_path: Path, out_path: Path, keep_float32_scopes: tuple[str, ...], scheme: str = INT8_SCHEMES[0]) -> None:
    if scheme not in INT8_SCHEMES:
        raise ValueError(f"unknown int8 scheme {scheme!r}; choose from {INT8_SCHEMES}")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(fp32_path))
    weights = {initializer.name for initializer in model.graph.initializer}
    weights |= {out for node in model.graph.node if node.op_type == "Constant" for out in node.output}
    keep = set(nodes_in_scopes(model.graph, keep_float32_scopes))
    weight_matmuls = [
        node.name
        for node in model.graph.node
        if node.op_type in ("MatMul", "Attention") and node.input[1] in weights and node.name not in keep
    ]
    if not weight_matmuls:
        raise ValueError("int8: the graph has no weight MatMul outside the frontend to quantise")
    quantize_dynamic(
        str(fp32_path),
        str(out_path),
        op_types_to_quantize=["MatMul", "Attention"],  # a fused Attention becomes QAttention
        nodes_to_quantize=weight_matmuls,
        weight_type=QuantType.QUInt8 if scheme == "u8" else QuantType.QInt8,
        per_channel=scheme == "s7-per-channel",
        reduce_range=scheme != "u8",  # 7-bit int8 weights: exact on AVX2 (no VNNI) as on VNNI
        # outputs of contrib operators (fused Attention) have no inferred type: they are float
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
