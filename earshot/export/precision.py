"""fp32 / fp16 / int8 variants of an exported float32 graph.

- fp16: every node outside the frontend runs in float16; the frontend (fbank: large sums of
  squared samples, a log) and the graph's inputs and outputs stay float32.
- int8: ONNX Runtime dynamic quantisation of the MatMuls that multiply by a weight, and of fused
  Attention nodes' projections (int8 weights, activations quantised per batch at run time); the
  patch-embedding conv, the frontend and attention's activation-by-activation products stay float.
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
    # ONNX Runtime's own model wrapper: its symbolic shape inference knows the contrib operators
    # (fused Attention) that onnx's shape inference does not, so the casts land where they belong.
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = OnnxModel(onnx.load(str(fp32_path)))
    keep = nodes_in_scopes(model.model.graph, keep_float32_scopes)
    model.convert_float_to_float16(use_symbolic_shape_infer=True, keep_io_types=True, node_block_list=keep)
    onnx.save(model.model, str(out_path))


def to_int8(fp32_path: Path, out_path: Path, keep_float32_scopes: tuple[str, ...]) -> None:
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
        weight_type=QuantType.QInt8,
        per_channel=False,
        reduce_range=False,
        # outputs of contrib operators (fused Attention) have no inferred type: they are float
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
