"""fp32 / fp16 / int8 variants of an exported float32 graph.

- fp16: every node outside the frontend runs in float16; the frontend (fbank: large sums of
  squared samples, a log) and the graph's inputs and outputs stay float32.
- int8: ONNX Runtime dynamic quantisation of the MatMuls that multiply by a weight (int8 weights,
  activations quantised per batch at run time); the patch-embedding conv, the frontend and the
  activation-by-activation MatMuls of attention stay float.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import onnx


def convert_precision(fp32_path: Path, out_path: Path, precision: str, keep_float32_scopes: tuple[str, ...]) -> None:
    if precision == "fp32":
        shutil.copyfile(fp32_path, out_path)
    elif precision == "fp16":
        to_fp16(fp32_path, out_path, keep_float32_scopes)
    elif precision == "int8":
        to_int8(fp32_path, out_path, keep_float32_scopes)
    else:
        raise ValueError(f"unknown precision {precision!r}")


def nodes_in_scopes(graph: onnx.GraphProto, scopes: tuple[str, ...]) -> list[str]:
    """Names of the nodes whose name contains one of the module scopes (e.g. "/frontend/")."""
    return [node.name for node in graph.node if any(scope in node.name for scope in scopes)]


def to_fp16(fp32_path: Path, out_path: Path, keep_float32_scopes: tuple[str, ...]) -> None:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(fp32_path))
    keep = nodes_in_scopes(model.graph, keep_float32_scopes)
    converted = convert_float_to_float16(model, keep_io_types=True, node_block_list=keep)
    onnx.save(converted, str(out_path))


def to_int8(fp32_path: Path, out_path: Path, keep_float32_scopes: tuple[str, ...]) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(fp32_path))
    weights = {initializer.name for initializer in model.graph.initializer}
    weights |= {out for node in model.graph.node if node.op_type == "Constant" for out in node.output}
    keep = set(nodes_in_scopes(model.graph, keep_float32_scopes))
    weight_matmuls = [
        node.name
        for node in model.graph.node
        if node.op_type == "MatMul" and node.input[1] in weights and node.name not in keep
    ]
    if not weight_matmuls:
        raise ValueError("int8: the graph has no weight MatMul outside the frontend to quantise")
    quantize_dynamic(
        str(fp32_path),
        str(out_path),
        op_types_to_quantize=["MatMul"],
        nodes_to_quantize=weight_matmuls,
        weight_type=QuantType.QInt8,
        per_channel=False,
        reduce_range=False,
    )
