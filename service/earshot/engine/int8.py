"""int8 that means the same on every CPU: what ONNX Runtime's integer kernels compute, and graph
forms whose results do not depend on the instruction set.

ONNX Runtime multiplies uint8 activations by int8 weights (u8s8) with an instruction that depends on
the CPU. With AVX-512 VNNI or AVX-VNNI (VPDPBUSD) the products are summed exactly in int32. On AVX2
or AVX-512 without VNNI it uses VPMADDUBSW, which adds two u8 x s8 products into a *saturating*
int16: 255 * 127 + 255 * 127 = 64770 becomes 32767, and the layer computes something else. The
other integer forms are exact everywhere: u8 x u8 (widened to int16 before VPMADDWD) and u8 x s8
whose weights stay within [-64, 64] (two products reach at most 2 * 255 * 64 = 32640).

So a graph has one exact integer meaning (int32 sums), and this module gives three things:
- `u8s8_kernels_saturate()`: measured, not guessed from CPU flags: a small MatMulInteger whose
  exact answer a saturating kernel cannot give, run once on this machine.
- `with_u8_weights(model)`: the same graph with every int8 weight that could saturate stored as
  uint8 with its zero point moved by 128 (q + 128, zp + 128: the same dequantised values, exactly),
  so ONNX Runtime takes its exact u8u8 kernels. The runner uses it where u8s8 saturates.
- `reference_model(model)` + `REFERENCE_SESSION_CONFIG`: the graph's meaning in float arithmetic,
  the reference for self-tests and parity. QuantizeLinear/DequantizeLinear run as the float
  arithmetic they define (ONNX Runtime's `session.disable_quant_qdq`), MatMulInteger is computed in
  float64 (integer sums below 2**53 are exact, so the result, cast back, is the int32 one), and QAttention
  becomes DequantizeLinear + the float Attention it approximates.
"""

from __future__ import annotations

import functools
import platform
import re
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MS_DOMAIN = "com.microsoft"
# The largest |int8 weight| whose pairwise u8 x s8 sums fit in int16: 2 * 255 * 64 = 32640 <= 32767.
SATURATION_FREE_WEIGHT = 64
REFERENCE_SESSION_CONFIG = {"session.disable_quant_qdq": "1"}
# the integer operators whose weight (second input) is an int8 constant that a u8s8 kernel multiplies
_WEIGHT_INPUT = {("", "DequantizeLinear"): 0, ("", "MatMulInteger"): 1, (MS_DOMAIN, "QAttention"): 1}
_WEIGHT_ZERO_POINT_INPUT = {("", "DequantizeLinear"): 2, ("", "MatMulInteger"): 3, (MS_DOMAIN, "QAttention"): 7}


# -- what this machine's kernels do ------------------------------------------------------------------
@functools.cache
def u8s8_kernels_saturate() -> bool:
    """True when ONNX Runtime's u8 x s8 integer kernels on this CPU do not sum exactly in int32."""
    import onnxruntime

    k = 64
    activations = np.full((4, k), 255, dtype=np.uint8)  # (4, k)
    weights = np.full((k, 8), 127, dtype=np.int8)  # (k, 8): a constant, prepacked as real weights are
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "w"], ["y"])],
        "u8s8_saturation_check",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [4, k])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [4, 8])],
        [numpy_helper.from_array(weights, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"a": activations})
    exact = activations.astype(np.int64) @ weights.astype(np.int64)  # 255 * 127 * 64 = 2072640
    return not np.array_equal(got.astype(np.int64), exact)


def cpu_description() -> dict[str, object]:
    """The CPU as reports name it: model, architecture, the SIMD flags that choose integer kernels."""
    model, flags = platform.processor() or platform.machine(), []
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        text = cpuinfo.read_text(errors="replace")
        if found := re.search(r"^model name\s*:\s*(.+)$", text, re.M):
            model = found.group(1).strip()
        if found := re.search(r"^flags\s*:\s*(.+)$", text, re.M):
            flags = sorted(f for f in found.group(1).split() if f.startswith("avx") or "vnni" in f or f == "fma")
    return {"model": model, "machine": platform.machine(), "simd_flags": flags}


# -- graph forms -------------------------------------------------------------------------------------
def _key(node: onnx.NodeProto) -> tuple[str, str]:
    return (node.domain if node.domain != "ai.onnx" else "", node.op_type)


def saturating_weights(model: onnx.ModelProto) -> list[str]:
    """Names of the int8 weight constants that a u8s8 kernel may saturate on (|q| > 64)."""
    initializers = {tensor.name: tensor for tensor in model.graph.initializer}
    names = []
    for node in model.graph.node:
        index = _WEIGHT_INPUT.get(_key(node))
        if index is None or len(node.input) <= index or node.input[index] not in initializers:
            continue
        tensor = initializers[node.input[index]]
        if tensor.data_type == TensorProto.INT8:
            if np.abs(numpy_helper.to_array(tensor).astype(np.int16)).max() > SATURATION_FREE_WEIGHT:
                names.append(tensor.name)
    return sorted(set(names))


def with_u8_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` whose saturating int8 weights are uint8 with zero point + 128 (same values)."""
    converted = onnx.ModelProto()
    converted.CopyFrom(model)
    to_convert = set(saturating_weights(converted))
    if not to_convert:
        return converted
    initializers = {tensor.name: tensor for tensor in converted.graph.initializer}
    shifted_zero_points: dict[str, str] = {}
    for node in converted.graph.node:
        key = _key(node)
        index = _WEIGHT_INPUT.get(key)
        if index is None or len(node.input) <= index or node.input[index] not in to_convert:
            continue
        zp_index = _WEIGHT_ZERO_POINT_INPUT[key]
        weight = initializers[node.input[index]]
        zero_name = node.input[zp_index] if len(node.input) > zp_index else ""
        if zero_name not in shifted_zero_points:
            if zero_name:
                zero = numpy_helper.to_array(initializers[zero_name])
            else:  # absent = 0 of the weight's type
                zero = np.zeros((), dtype=np.int8)
            new_name = (zero_name or weight.name) + "_u8"
            converted.graph.initializer.append(numpy_helper.from_array(_shift_to_u8(zero), new_name))
            shifted_zero_points[zero_name] = new_name
        while len(node.input) <= zp_index:
            node.input.append("")
        node.input[zp_index] = shifted_zero_points[zero_name]
    for name in to_convert:
        initializers[name].CopyFrom(numpy_helper.from_array(_shift_to_u8(numpy_helper.to_array(initializers[name])), name))
    _drop_unused_initializers(converted)
    return converted


def exact_integer_form(model: onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    """The graph in the form whose integer kernels sum exactly on this CPU, and what was done."""
    model = fold_weight_quantize(model)
    if saturating_weights(model) and u8s8_kernels_saturate():
        return with_u8_weights(model), "int8 exact integer, weights in u8 form (this CPU's u8s8 kernels saturate)"
    return model, "int8 exact integer"


def is_weight_quantize(node: onnx.NodeProto, initializers: dict[str, np.ndarray]) -> bool:
    """A QuantizeLinear of a float constant: a weight quantised at run time, as exported QDQ graphs do."""
    return node.op_type == "QuantizeLinear" and node.input[0] in initializers


def quantize_constant(node: onnx.NodeProto, initializers: dict[str, np.ndarray]) -> np.ndarray:
    """QuantizeLinear of a constant, evaluated as ONNX defines it: round half to even, saturate,
    per axis where the scale is a vector."""
    values, scale, zero_point = (initializers[name] for name in node.input[:3])
    axis = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), 1)
    shape = [1] * values.ndim
    if scale.ndim == 1 and scale.size > 1:
        shape[axis] = -1
    info = np.iinfo(zero_point.dtype)
    q = np.rint(values / scale.reshape(shape)) + zero_point.reshape(shape if zero_point.size > 1 else [])
    return np.clip(q, info.min, info.max).astype(zero_point.dtype)


def fold_weight_quantize(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy with every QuantizeLinear of a float constant replaced by the integer constant it
    gives (what ONNX Runtime's constant folding does too), so the weights' int8 values are visible."""
    initializers = {tensor.name: numpy_helper.to_array(tensor) for tensor in model.graph.initializer}
    folds = [node for node in model.graph.node if is_weight_quantize(node, initializers)
             and all(name in initializers for name in node.input[1:3])]
    if not folds:
        return model
    folded = onnx.ModelProto()
    folded.CopyFrom(model)
    keep = [node for node in folded.graph.node if node.output[0] not in {f.output[0] for f in folds}]
    del folded.graph.node[:]
    folded.graph.node.extend(keep)
    for node in folds:
        folded.graph.initializer.append(numpy_helper.from_array(quantize_constant(node, initializers), node.output[0]))
    _drop_unused_initializers(folded)
    return folded


def exact_integer_session(model: onnx.ModelProto):
    """A CPU session of an integer graph that gives its exact int32 sums here, as on every CPU."""
    import onnxruntime

    exact, _ = exact_integer_form(model)
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(exact.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _shift_to_u8(values: np.ndarray) -> np.ndarray:
    """int8 q -> uint8 q + 128: (q + 128) - (zp + 128) = q - zp, so dequantised values are unchanged."""
    if values.dtype != np.int8:
        raise ValueError(f"expected int8 values, got {values.dtype}")
    return (values.astype(np.int16) + 128).astype(np.uint8)


def reference_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """The graph's meaning in float arithmetic (run it with REFERENCE_SESSION_CONFIG)."""
    reference = onnx.ModelProto()
    reference.CopyFrom(model)
    graph = reference.graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    rewritten: list[onnx.NodeProto] = []
    for node in graph.node:
        key = _key(node)
        if key == ("", "MatMulInteger"):
            rewritten += _matmul_integer_in_float64(node, initializers, graph)
        elif key == (MS_DOMAIN, "QAttention"):
            rewritten += _qattention_in_float(node, initializers, graph)
        else:
            rewritten.append(node)
    del graph.node[:]
    graph.node.extend(rewritten)
    _drop_unused_initializers(reference)
    if not any(o.domain == MS_DOMAIN for o in reference.opset_import) and any(
        n.domain == MS_DOMAIN for n in graph.node
    ):
        reference.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return reference


def _constant_or_cast(name: str, initializers, graph: onnx.GraphProto, nodes: list, to: int, prefix: str) -> str:
    """`name` as a float tensor of type `to`: a new initializer if constant, else a Cast node."""
    dtype = helper.tensor_dtype_to_np_dtype(to)
    if name in initializers:
        cast_name = f"{prefix}/{name}_as_{np.dtype(dtype).name}"
        if cast_name not in initializers:
            values = numpy_helper.to_array(initializers[name]).astype(dtype)
            tensor = numpy_helper.from_array(values, cast_name)
            graph.initializer.append(tensor)
            initializers[cast_name] = tensor
        return cast_name
    cast_name = f"{prefix}/{name}_cast"
    nodes.append(helper.make_node("Cast", [name], [cast_name], to=to, name=cast_name))
    return cast_name


def _matmul_integer_in_float64(node, initializers, graph) -> list[onnx.NodeProto]:
    """(A - a_zp) @ (B - b_zp) in float64: every product and sum of the int32 result, exactly."""
    prefix = node.name or node.output[0]
    nodes: list[onnx.NodeProto] = []
    inputs = list(node.input) + [""] * (4 - len(node.input))
    centred = []
    for operand, zero in ((inputs[0], inputs[2]), (inputs[1], inputs[3])):
        value = _constant_or_cast(operand, initializers, graph, nodes, TensorProto.DOUBLE, prefix)
        if zero:
            zero_value = _constant_or_cast(zero, initializers, graph, nodes, TensorProto.DOUBLE, prefix)
            # B's zero point is a scalar or per column (N,), broadcasting along B's last axis as it is;
            # A's per-row form (M,) would need a reshape, and no exporter of ours writes it
            if operand == inputs[0] and zero in initializers and numpy_helper.to_array(initializers[zero]).size > 1:
                raise ValueError(f"{prefix}: per-row zero points of A are not supported")
            out = f"{prefix}/{operand}_centred"
            nodes.append(helper.make_node("Sub", [value, zero_value], [out], name=out))
            value = out
        centred.append(value)
    product = prefix + "/float64"
    nodes.append(helper.make_node("MatMul", centred, [product], name=product))
    # back to the int32 the operator defines: the float64 sums are integers, so this is exact
    nodes.append(helper.make_node("Cast", [product], [node.output[0]], to=TensorProto.INT32, name=product + "/int32"))
    return nodes


def _qattention_in_float(node, initializers, graph) -> list[onnx.NodeProto]:
    """QAttention(x_q, W_q, bias, x_scale, W_scale, mask, x_zp, W_zp, past) -> Attention on the
    dequantised input and weights (the float attention the quantised one approximates)."""
    prefix = node.name or node.output[0]
    inputs = list(node.input) + [""] * (9 - len(node.input))
    x_q, w_q, bias, x_scale, w_scale, mask, x_zp, w_zp, past = inputs
    x_float = prefix + "/input_dequantized"
    nodes = [helper.make_node("DequantizeLinear", [x_q, x_scale] + ([x_zp] if x_zp else []), [x_float], name=x_float)]
    weight = numpy_helper.to_array(initializers[w_q]).astype(np.float64)  # (hidden, 3 * hidden)
    zero = numpy_helper.to_array(initializers[w_zp]).astype(np.float64) if w_zp else 0.0
    scale = numpy_helper.to_array(initializers[w_scale]).astype(np.float64)
    w_float = prefix + "/weight_dequantized"
    graph.initializer.append(numpy_helper.from_array(((weight - zero) * scale).astype(np.float32), w_float))
    attention = helper.make_node(
        "Attention",
        [x_float, w_float, bias, mask, past][: 5 if past else (4 if mask else 3)],
        list(node.output),
        name=prefix + "/float",
        domain=MS_DOMAIN,
    )
    attention.attribute.extend(node.attribute)
    return nodes + [attention]


def _drop_unused_initializers(model: onnx.ModelProto) -> None:
    used = {name for node in model.graph.node for name in node.input}
    used |= {output.name for output in model.graph.output}
    kept = [tensor for tensor in model.graph.initializer if tensor.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
