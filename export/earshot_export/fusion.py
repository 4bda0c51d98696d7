"""Fusing a traced transformer graph with ONNX Runtime's contrib attention operators.

ONNX Runtime's own graph optimiser (run when a session loads) fuses LayerNorm, GELU and MatMul+Add,
but not attention. Its offline transformer optimiser does: each layer's Q/K/V MatMuls, scaling,
Softmax and output MatMul become one `com.microsoft.Attention` node (one fused kernel on CPU and
CUDA, and `QAttention` once quantised), and residual + LayerNorm become `SkipLayerNormalization`.

It finds nothing in attention with an additive score bias: HTS-AT's window attention (relative
position bias + shifted-window mask, a constant per block) and BEATs' gated relative position
bias (computed from q at run time). `fuse_biased_attention` rewrites those itself: each
MatMul(q, k^T) / sqrt(hd) + bias -> Softmax -> MatMul(., v) becomes one
`com.microsoft.MultiHeadAttention` with the bias as its `attention_bias` input, folded to an
initializer when it is a constant. Swin's shifted blocks carry one bias per window (nW, H, N, N)
while the attention batch is B * nW; MultiHeadAttention broadcasts a bias only over a batch of 1,
so there the windows of a clip become heads: q, k, v (B, N, nW * D) with nW * H heads, and the
bias (1, nW * H, N, N) a constant again.

Those are ONNX Runtime contrib operators: TensorRT runs them through its CUDA fallback, so a bundle
meant for TensorRT is exported with `--no-fuse` (standard ONNX operators, untouched).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

log = logging.getLogger(__name__)

CONTRIB = "com.microsoft"
MHA = "MultiHeadAttention"


def fuse_attention(in_path: Path, out_path: Path, num_heads: int, hidden_size: int) -> dict[str, int]:
    """Write the fused graph to out_path; returns the count of each fused operator (all zero: unchanged).

    num_heads > 0: ONNX Runtime's transformer optimiser first (plain ViT attention, SkipLayerNorm);
    then, for every model, attention with an additive bias (fuse_biased_attention)."""
    statistics: dict[str, int] = {}
    if num_heads:
        from onnxruntime.transformers.optimizer import optimize_model

        optimized = optimize_model(
            str(in_path), model_type="vit", num_heads=num_heads, hidden_size=hidden_size, opt_level=0
        )
        statistics = {name: count for name, count in optimized.get_fused_operator_statistics().items() if count}
        optimized.topological_sort()
        model = optimized.model
    else:
        model = onnx.load(str(in_path))
    biased = fuse_biased_attention(model)
    if biased:
        statistics[MHA] = statistics.get(MHA, 0) + biased
    if any(node.domain == CONTRIB for node in model.graph.node) and not any(
        opset.domain == CONTRIB for opset in model.opset_import
    ):
        model.opset_import.append(onnx.helper.make_opsetid(CONTRIB, 1))
    onnx.save(model, str(out_path))
    log.info("fused operators: %s", statistics or "none")
    return statistics


def fused_attention_per_scope(model: onnx.ModelProto, depth: int = 2) -> Counter[str]:
    """MultiHeadAttention nodes counted by the first `depth` parts of their scope that name a stage
    ("stages.0"), or "" where there is none."""
    counts: Counter[str] = Counter()
    for node in model.graph.node:
        if node.op_type == MHA and node.domain == CONTRIB:
            stage = next((part for part in node.name.split("/") if part.startswith("stages.")), "")
            counts[stage] += 1
    return counts


class _Graph:
    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.graph = model.graph
        self.inits = {init.name: init for init in self.graph.initializer}
        self.producer = {out: node for node in self.graph.node for out in node.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in self.graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.graph_inputs = {i.name for i in self.graph.input}
        self._counter = 0

    def const(self, name: str) -> np.ndarray | None:
        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    return numpy_helper.to_array(attr.t)
        return None

    def op(self, name: str, op_type: str) -> onnx.NodeProto | None:
        node = self.producer.get(name)
        return node if node is not None and node.op_type == op_type else None

    def only_consumer(self, name: str) -> onnx.NodeProto | None:
        users = self.consumers.get(name, [])
        outputs = {o.name for o in self.graph.output}
        return users[0] if len(users) == 1 and name not in outputs else None

    def is_constant(self, name: str, seen: dict[str, bool] | None = None) -> bool:
        """True when `name` depends on no graph input."""
        seen = {} if seen is None else seen
        if name in seen:
            return seen[name]
        if name in self.inits or name == "":
            result = True
        elif name in self.graph_inputs or name not in self.producer:
            result = False
        else:
            result = all(self.is_constant(i, seen) for i in self.producer[name].input)
        seen[name] = result
        return result

    def ancestors(self, names: list[str]) -> list[onnx.NodeProto]:
        found: dict[int, onnx.NodeProto] = {}
        stack = list(names)
        while stack:
            node = self.producer.get(stack.pop())
            if node is None or id(node) in found:
                continue
            found[id(node)] = node
            stack.extend(node.input)
        order = {id(node): index for index, node in enumerate(self.graph.node)}
        return sorted(found.values(), key=lambda node: order[id(node)])

    def evaluate(self, names: list[str]) -> list[np.ndarray]:
        """Values of constant tensors (their subgraph run once with ONNX Runtime on CPU)."""
        import onnxruntime as ort

        nodes = self.ancestors(names)
        used = {i for node in nodes for i in node.input}
        graph = helper.make_graph(
            nodes, "constants", [], [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in names],
            initializer=[self.inits[n] for n in used if n in self.inits],
        )
        model = helper.make_model(graph, opset_imports=list(self.model.opset_import), ir_version=self.model.ir_version)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return list(session.run(names, {}))

    def initializer(self, scope: str, array: np.ndarray, stem: str) -> str:
        name = self.fresh(f"{scope}/{stem}")
        self.graph.initializer.append(numpy_helper.from_array(array, name))
        return name

    def fresh(self, stem: str) -> str:
        self._counter += 1
        return f"{stem}_fused{self._counter}"


def _perm(node: onnx.NodeProto) -> list[int]:
    return next((list(attr.ints) for attr in node.attribute if attr.name == "perm"), [])


def _heads_split(g: _Graph, name: str) -> tuple[str, int] | None:
    """name = Transpose(0, 2, 1, 3)(Reshape(x (B', N, D), [B', N, H, hd])): (x, H)."""
    transpose = g.op(name, "Transpose")
    if transpose is None or _perm(transpose) != [0, 2, 1, 3]:
        return None
    return _heads_reshape(g, transpose.input[0])


def _heads_reshape(g: _Graph, name: str) -> tuple[str, int] | None:
    """name = Reshape(x (B', N, D), [B', N, H, hd]): (x, H)."""
    reshape = g.op(name, "Reshape")
    if reshape is None:
        return None
    shape = g.const(reshape.input[1])
    if shape is not None:
        heads = int(shape[2]) if shape.size == 4 else 0
    else:
        concat = g.op(reshape.input[1], "Concat")
        value = g.const(concat.input[2]) if concat is not None and len(concat.input) == 4 else None
        heads = int(value.reshape(-1)[0]) if value is not None and value.size == 1 else 0
    return (reshape.input[0], heads) if heads > 0 else None


def _unwrap_windows(g: _Graph, name: str) -> str:
    """Strip Reshape(x 4D -> (B, nW, H, N, hd)) of Swin's shifted blocks: the 4D head tensor."""
    reshape = g.op(name, "Reshape")
    return reshape.input[0] if reshape is not None else name


def fuse_biased_attention(model: onnx.ModelProto) -> int:
    """Rewrite attention with an additive score bias in place (see the module doc); returns the count."""
    g = _Graph(model)
    matches = []
    for softmax in [node for node in g.graph.node if node.op_type == "Softmax"]:
        axis = next((attr.i for attr in softmax.attribute if attr.name == "axis"), -1)
        add = g.op(softmax.input[0], "Add")
        if axis != -1 or add is None or g.only_consumer(add.output[0]) is not softmax:
            continue
        div_side = next((i for i, n in enumerate(add.input) if g.op(n, "Div") is not None), None)
        if div_side is None:
            continue
        div = g.producer[add.input[div_side]]
        bias = add.input[1 - div_side]
        divisor = g.const(div.input[1])
        qk = g.op(div.input[0], "MatMul")
        pv = g.only_consumer(softmax.output[0])
        if divisor is None or divisor.size != 1 or qk is None or pv is None or pv.op_type != "MatMul":
            continue
        if pv.input[0] != softmax.output[0] or g.only_consumer(qk.output[0]) is not div:
            continue
        k_transpose = g.op(qk.input[1], "Transpose")
        if k_transpose is None:
            continue
        rank = len(_perm(k_transpose))
        if rank == 4 and _perm(k_transpose) == [0, 2, 3, 1]:  # the exporter merged k's two transposes
            k_split = _heads_reshape(g, k_transpose.input[0])
        elif rank in (4, 5) and _perm(k_transpose) == [*range(rank - 2), rank - 1, rank - 2]:
            k_split = _heads_split(g, _unwrap_windows(g, k_transpose.input[0]) if rank == 5 else k_transpose.input[0])
        else:
            continue
        splits = [_heads_split(g, _unwrap_windows(g, n)) if rank == 5 else _heads_split(g, n)
                  for n in (qk.input[0], pv.input[1])]
        splits.insert(1, k_split)
        if any(split is None for split in splits) or len({split[1] for split in splits if split}) != 1:
            continue
        # the output: [Reshape (B', H, N, hd)] -> Transpose(0, 2, 1, 3) -> Reshape (B', N, D)
        node = g.only_consumer(pv.output[0])
        if node is not None and node.op_type == "Reshape":
            node = g.only_consumer(node.output[0])
        if node is None or node.op_type != "Transpose" or _perm(node) != [0, 2, 1, 3]:
            continue
        out_reshape, shapes = _output_reshape(g, node.output[0])
        if out_reshape is None or (rank == 5 and not g.is_constant(bias)):
            continue
        x_q, x_k, x_v = (split[0] for split in splits if split)
        heads = splits[0][1] if splits[0] else 0
        matches.append((softmax, bias, float(divisor.reshape(-1)[0]), rank, (x_q, x_k, x_v), heads, out_reshape, shapes))
    if not matches:
        return 0

    constant_biases = sorted({m[1] for m in matches if g.is_constant(m[1])})
    dynamic = [m for m in matches if m[1] not in constant_biases]
    if dynamic:  # a bias computed at run time must already be (B or 1, H or 1, N, N): MultiHeadAttention's rule
        shapes_of = _symbolic_shapes(model)
        ok = {id(m[0]) for m in dynamic if _bias_fits(shapes_of, m[1], g.producer[m[0].input[0]], m[5])}
        matches = [m for m in matches if m[1] in constant_biases or id(m[0]) in ok]
    values = dict(zip(constant_biases, g.evaluate(constant_biases), strict=True)) if constant_biases else {}
    new_nodes: dict[int, list[onnx.NodeProto]] = {}  # index of the output Reshape -> nodes to put in its place
    index_of = {id(node): index for index, node in enumerate(g.graph.node)}
    fused = 0
    for softmax, bias, divisor, rank, (x_q, x_k, x_v), heads, out_reshape, shapes in matches:
        scope = softmax.name.rsplit("/", 1)[0] if "/" in softmax.name else softmax.name
        head_dim = round(divisor * divisor)
        if not math.isclose(math.sqrt(head_dim), divisor, rel_tol=1e-6):
            continue
        nodes: list[onnx.NodeProto] = []
        value = values.get(bias)
        scale = 1.0 / divisor

        if rank == 4:
            if value is not None:
                if value.ndim != 4 or value.shape[0] != 1 or value.shape[1] not in (1, heads):
                    continue
                bias_name = g.initializer(scope, value.astype(np.float32), "attention_bias")
            else:
                bias_name = bias  # (B, H, N, N) at run time
            inputs, num_heads, out_name = [x_q, x_k, x_v], heads, out_reshape.output[0]
            mha_out = out_name
        else:
            assert value is not None
            if value.ndim != 4 or value.shape[1] != heads:
                continue
            windows, _, tokens, _ = value.shape
            width = heads * head_dim
            bias_name = g.initializer(scope, value.reshape(1, windows * heads, tokens, tokens).astype(np.float32),
                                    "attention_bias")
            to_clips = g.initializer(scope, np.array([-1, windows, tokens, width], dtype=np.int64), "windows_shape")
            to_heads = g.initializer(scope, np.array([0, 0, windows * width], dtype=np.int64), "heads_shape")
            inputs = []
            for x in (x_q, x_k, x_v):  # (B * nW, N, D) -> (B, N, nW * D): head w * H + h
                a, b, c = g.fresh(f"{x}/clips"), g.fresh(f"{x}/tokens"), g.fresh(f"{x}/heads")
                nodes += [
                    helper.make_node("Reshape", [x, to_clips], [a], name=g.fresh(f"{scope}/Reshape")),
                    helper.make_node("Transpose", [a], [b], name=g.fresh(f"{scope}/Transpose"), perm=[0, 2, 1, 3]),
                    helper.make_node("Reshape", [b, to_heads], [c], name=g.fresh(f"{scope}/Reshape")),
                ]
                inputs.append(c)
            num_heads = windows * heads
            mha_out = g.fresh(f"{scope}/MultiHeadAttention_output")
        nodes.insert(len(nodes), helper.make_node(
            MHA, [*inputs, "", "", bias_name], [mha_out], name=g.fresh(f"{scope}/MultiHeadAttention"),
            domain=CONTRIB, num_heads=num_heads, scale=scale,
        ))
        if rank == 5:  # (B, N, nW * D) -> (B * nW, N, D)
            split = g.initializer(scope, np.array([0, 0, windows, width], dtype=np.int64), "split_shape")
            merged = g.initializer(scope, np.array([-1, tokens, width], dtype=np.int64), "merged_shape")
            a, b = g.fresh(f"{scope}/windows"), g.fresh(f"{scope}/window_major")
            nodes += [
                helper.make_node("Reshape", [mha_out, split], [a], name=g.fresh(f"{scope}/Reshape")),
                helper.make_node("Transpose", [a], [b], name=g.fresh(f"{scope}/Transpose"), perm=[0, 2, 1, 3]),
                helper.make_node("Reshape", [b, merged], [out_reshape.output[0]], name=g.fresh(f"{scope}/Reshape")),
            ]
        new_nodes[index_of[id(out_reshape)]] = nodes
        for shape in shapes:  # Shape(out (B', N, H, hd)) read for B' and N only: the same from (B', N, D)
            shape.input[0] = out_reshape.output[0]
        fused += 1
    if not fused:
        return 0
    rebuilt: list[onnx.NodeProto] = []
    for index, node in enumerate(g.graph.node):
        rebuilt.extend(new_nodes.get(index, [node]))
    del g.graph.node[:]
    g.graph.node.extend(_topological(rebuilt))
    _remove_dead(g.graph)
    return fused


def _symbolic_shapes(model: onnx.ModelProto) -> dict[str, list[int | str]]:
    """Tensor shapes by ONNX Runtime's symbolic shape inference ({} where it fails)."""
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    try:
        inferred = SymbolicShapeInference.infer_shapes(model, auto_merge=True)
    except Exception as error:  # noqa: BLE001 - any failure only means no dynamic-bias fusion
        log.warning("symbolic shape inference failed (%s): attention with a run-time bias stays unfused", error)
        return {}
    return {
        info.name: [dim.dim_value or dim.dim_param for dim in info.type.tensor_type.shape.dim]
        for info in inferred.graph.value_info
        if info.type.HasField("tensor_type") and info.type.tensor_type.HasField("shape")
    }


def _bias_fits(shapes: dict[str, list[int | str]], bias: str, add: onnx.NodeProto, heads: int) -> bool:
    """bias (B or 1, H or 1, N, N) for scores (B, H, N, N) = the other input of `add`."""
    scores = next((shapes.get(name) for name in add.input if name != bias), None)
    shape = shapes.get(bias)
    if not scores or not shape or len(shape) != 4 or len(scores) != 4:
        return False
    return (shape[2:] == scores[2:] and all(shape[2:]) and shape[1] in (1, heads) and shape[0] in (1, scores[0])
            and scores[1] == heads)


def _output_reshape(g: _Graph, name: str) -> tuple[onnx.NodeProto | None, list[onnx.NodeProto]]:
    """The Reshape (B', N, H, hd) -> (B', N, D) that reads `name`, and the Shape nodes that read it
    too, for dimensions 0 and 1 only (BEATs' out.reshape(out.shape[0], out.shape[1], D))."""
    users = g.consumers.get(name, [])
    if name in {o.name for o in g.graph.output}:
        return None, []
    reshapes = [node for node in users if node.op_type == "Reshape" and node.input[0] == name]
    shapes = [node for node in users if node.op_type == "Shape"]
    if len(reshapes) != 1 or len(reshapes) + len(shapes) != len(users):
        return None, []
    for shape in shapes:
        if any(attr.name in ("start", "end") for attr in shape.attribute):
            return None, []
        for gather in g.consumers.get(shape.output[0], []):
            index = g.const(gather.input[1]) if gather.op_type == "Gather" else None
            if index is None or index.size != 1 or int(index.reshape(-1)[0]) not in (0, 1):
                return None, []
    return reshapes[0], shapes


def _topological(nodes: list[onnx.NodeProto]) -> list[onnx.NodeProto]:
    """Nodes in an order where each comes after its inputs' producers (stable otherwise)."""
    produced_by = {out: index for index, node in enumerate(nodes) for out in node.output}
    done: set[int] = set()
    order: list[onnx.NodeProto] = []
    for start in range(len(nodes)):
        stack = [(start, False)]
        while stack:
            index, expanded = stack.pop()
            if index in done:
                continue
            if expanded:
                done.add(index)
                order.append(nodes[index])
                continue
            stack.append((index, True))
            for name in reversed(nodes[index].input):
                parent = produced_by.get(name)
                if parent is not None and parent not in done:
                    stack.append((parent, False))
    return order


def _remove_dead(graph: onnx.GraphProto) -> None:
    """Drop nodes (and initializers) that no graph output depends on any more."""
    needed = {o.name for o in graph.output}
    keep: list[onnx.NodeProto] = []
    for node in reversed(list(graph.node)):
        if any(out in needed for out in node.output):
            keep.append(node)
            needed.update(i for i in node.input if i)
    keep.reverse()
    del graph.node[:]
    graph.node.extend(keep)
    initializers = [init for init in graph.initializer if init.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    value_info = [info for info in graph.value_info if info.name in needed]
    del graph.value_info[:]
    graph.value_info.extend(value_info)
