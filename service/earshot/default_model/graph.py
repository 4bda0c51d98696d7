"""The bundle graph: the frontend joined to Qualcomm's quantised YAMNet, batch made dynamic.

Two variants, both waveform [B, 15600] (a 15360-sample window with 200 samples of context
before it and 40 after) -> embedding [B, 1024], logits [B, 521]:
- "int8": the source's QDQ arithmetic kept. The log-mel patch is quantised exactly as the source's
  uint8 input expects (QuantizeLinear, scale 0.047937885, zero point 144), weights are stored as
  int8 initializers (ONNX Runtime fuses DequantizeLinear -> Conv -> QuantizeLinear into
  QLinearConv), logits are the source's uint8 scores dequantised (0.7565417 * (q - 190)).
- "float": every QuantizeLinear/DequantizeLinear pair removed; the weights are the dequantised
  int8 weights (exactly, they were on the grid), activations and logits stay float32.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from earshot.bundle import EMBEDDING_OUTPUT, LOGITS_OUTPUT, WAVEFORM_INPUT
from earshot.default_model.config import FRONTEND, SOURCE, FrontendConfig, SourceGraphConfig
from earshot.default_model.frontend import IR_VERSION, frontend_nodes
from earshot.engine.int8 import is_weight_quantize, quantize_constant

VARIANTS = ("int8", "float")
BATCH = "batch"


def build_graph(
    source: onnx.ModelProto,
    variant: str,
    frontend: FrontendConfig = FRONTEND,
    config: SourceGraphConfig = SOURCE,
) -> onnx.ModelProto:
    if variant not in VARIANTS:
        raise ValueError(f"variant {variant!r} not one of {VARIANTS}")
    graph = source.graph
    if not any(node.name == config.batch_reshape_name for node in graph.node):
        raise ValueError(f"no node {config.batch_reshape_name!r}: cannot make the batch dynamic")
    initializers = {tensor.name: numpy_helper.to_array(tensor) for tensor in graph.initializer}
    log_mel = "/frontend/log_mel"
    nodes, tensors = frontend_nodes(WAVEFORM_INPUT, log_mel, frontend)

    if variant == "int8":
        body, body_tensors = _int8_body(graph, initializers, log_mel, config)
    else:
        body, body_tensors = _float_body(graph, initializers, log_mel, config)
    nodes += body
    tensors += body_tensors

    new_graph = helper.make_graph(
        nodes,
        f"yamnet_{variant}",
        [helper.make_tensor_value_info(WAVEFORM_INPUT, TensorProto.FLOAT, [BATCH, frontend.input_samples])],
        [
            helper.make_tensor_value_info(EMBEDDING_OUTPUT, TensorProto.FLOAT, [BATCH, config.embedding_dim]),
            helper.make_tensor_value_info(LOGITS_OUTPUT, TensorProto.FLOAT, [BATCH, config.num_labels]),
        ],
        tensors,
    )
    opset = next(o.version for o in source.opset_import if o.domain in ("", "ai.onnx"))
    model = helper.make_model(
        new_graph,
        opset_imports=[helper.make_opsetid("", opset)],
        ir_version=IR_VERSION,
        producer_name="earshot",
        doc_string=f"YAMNet ({variant}) from Qualcomm AI Hub's w8a8 export, with an in-graph log-mel frontend",
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def _dynamic_batch_reshape(node: onnx.NodeProto, initializers: dict[str, np.ndarray], config: SourceGraphConfig):
    """The source flattens the pooled features with the constant [1, -1], pinning batch 1."""
    shape = initializers[node.input[1]]
    if shape.tolist() != [1, -1]:
        raise ValueError(f"{node.name}: expected the shape constant [1, -1], found {shape.tolist()}")
    fixed_name = node.input[1] + "_dynamic_batch"
    fixed = numpy_helper.from_array(np.array([-1, config.embedding_dim], dtype=np.int64), fixed_name)
    # (B, 1024, 1, 1) -> (B, 1024)
    return helper.make_node("Reshape", [node.input[0], fixed_name], list(node.output), name=node.name), fixed


def _used_initializers(
    nodes: list[onnx.NodeProto], initializers: dict[str, np.ndarray], extra: dict[str, np.ndarray]
) -> list[onnx.TensorProto]:
    """The constants `nodes` read: `extra` (new or replaced ones) first, then the source's."""
    used = {name for node in nodes for name in node.input}
    merged = {**{k: v for k, v in initializers.items() if k not in extra}, **extra}
    return [numpy_helper.from_array(value, name) for name, value in merged.items() if name in used]


def _int8_body(graph, initializers, log_mel: str, config: SourceGraphConfig):
    nodes = [
        # the source's uint8 input: q = clip(round(log_mel / 0.047937885 + 144), 0, 255)
        helper.make_node(
            "QuantizeLinear",
            [log_mel, config.input_name + "_scale", config.input_name + "_zero_point"],
            [config.input_name],
            name="/frontend/QuantizeLinear",
        )
    ]
    extra: dict[str, np.ndarray] = {}
    for node in graph.node:
        if is_weight_quantize(node, initializers):
            # stored as int8 with its DequantizeLinear, the form ONNX Runtime's QDQ fusion looks for
            extra[node.output[0]] = quantize_constant(node, initializers)
        elif node.name == config.batch_reshape_name:
            reshape, fixed = _dynamic_batch_reshape(node, initializers, config)
            nodes.append(reshape)
            extra[fixed.name] = numpy_helper.to_array(fixed)
        else:
            nodes.append(node)
    nodes += [
        helper.make_node("Identity", [config.embedding_name], [EMBEDDING_OUTPUT], name="/output/embedding"),
        helper.make_node(
            "DequantizeLinear",
            [config.output_name, config.output_name + "_scale", config.output_name + "_zero_point"],
            [LOGITS_OUTPUT],
            name="/output/logits",
        ),
    ]
    return nodes, _used_initializers(nodes, initializers, extra)


def _float_body(graph, initializers, log_mel: str, config: SourceGraphConfig):
    """Drop every Q/DQ: a DequantizeLinear's output becomes what its QuantizeLinear was given."""
    producers = {output: node for node in graph.node for output in node.output}
    alias: dict[str, str] = {}  # tensor name -> the float tensor that replaces it
    extra: dict[str, np.ndarray] = {}
    for node in graph.node:
        if node.op_type != "DequantizeLinear":
            continue
        quantized = node.input[0]
        if quantized == config.input_name:
            alias[node.output[0]] = log_mel
            continue
        quantize = producers.get(quantized)
        if quantize is None or quantize.op_type != "QuantizeLinear":
            raise ValueError(f"{node.name}: DequantizeLinear not fed by a QuantizeLinear")
        if is_weight_quantize(quantize, initializers):
            scale, zero_point = (initializers[name] for name in node.input[1:3])
            q = quantize_constant(quantize, initializers).astype(np.float32)
            shape = [1] * q.ndim
            if scale.ndim == 1 and scale.size > 1:
                axis = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), 1)
                shape[axis] = -1
            zero = zero_point.astype(np.float32).reshape(shape if zero_point.size > 1 else [])
            extra[node.output[0]] = ((q - zero) * scale.reshape(shape)).astype(np.float32)
        else:
            alias[node.output[0]] = quantize.input[0]

    def resolve(name: str) -> str:
        while name in alias:
            name = alias[name]
        return name

    nodes = []
    for node in graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if node.name == config.batch_reshape_name:
            node, fixed = _dynamic_batch_reshape(node, initializers, config)
            extra[fixed.name] = numpy_helper.to_array(fixed)
        rewired = helper.make_node(node.op_type, [resolve(i) for i in node.input], list(node.output), name=node.name)
        rewired.attribute.extend(node.attribute)
        nodes.append(rewired)
    nodes += [
        helper.make_node("Identity", [resolve(config.embedding_name)], [EMBEDDING_OUTPUT], name="/output/embedding"),
        helper.make_node("Identity", [config.float_logits_name], [LOGITS_OUTPUT], name="/output/logits"),
    ]
    return nodes, _used_initializers(nodes, initializers, extra)
