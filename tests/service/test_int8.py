"""int8 arithmetic that does not depend on the CPU, checked against exact numpy integer sums.

Nothing here compares with what ONNX Runtime's fast kernels give on the machine at hand: every
expected value is computed with int64 numpy arithmetic, so the tests hold on AVX2 and VNNI alike.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

from earshot.engine import int8
from earshot.engine.runner import open_session

K, N = 96, 16  # inner and output width of the test MatMuls


def worst_case_operands(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 activations near 255 and int8 weights near +-127: what a saturating kernel gets wrong."""
    rng = np.random.default_rng(seed)
    activations = rng.integers(200, 256, size=(5, K), dtype=np.int64).astype(np.uint8)  # (5, K)
    weights = (rng.choice([-1, 1], size=(K, N)) * rng.integers(100, 128, size=(K, N))).astype(np.int8)  # (K, N)
    return activations, weights


def qdq_matmul_model(weights: np.ndarray, weight_zero_point: int = 0) -> onnx.ModelProto:
    """x (float) -> Q (u8, scale 1, zp 0) -> DQ -> MatMul with DQ(int8 weights, scale 1) -> y (float)."""
    scale = numpy_helper.from_array(np.array(1.0, dtype=np.float32), "scale")
    zero_u8 = numpy_helper.from_array(np.array(0, dtype=np.uint8), "zero_u8")
    zero_w = numpy_helper.from_array(np.array(weight_zero_point, dtype=np.int8), "zero_w")
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "scale", "zero_u8"], ["x_q"]),
        helper.make_node("DequantizeLinear", ["x_q", "scale", "zero_u8"], ["x_dq"]),
        helper.make_node("DequantizeLinear", ["w_q", "scale", "zero_w"], ["w_dq"]),
        helper.make_node("MatMul", ["x_dq", "w_dq"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "qdq_matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", N])],
        [numpy_helper.from_array(weights, "w_q"), scale, zero_u8, zero_w],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def matmul_integer_model(weights: np.ndarray) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "w"], ["y"])],
        "matmul_integer",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, ["batch", K])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, ["batch", N])],
        [numpy_helper.from_array(weights, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=9)


def run(model: onnx.ModelProto, feeds: dict[str, np.ndarray], config: dict[str, str] | None = None) -> np.ndarray:
    options = onnxruntime.SessionOptions()
    for key, value in (config or {}).items():
        options.add_session_config_entry(key, value)
    session = onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def test_the_saturation_check_answers_for_this_cpu():
    assert isinstance(int8.u8s8_kernels_saturate(), bool)
    description = int8.cpu_description()
    assert description["machine"] and isinstance(description["simd_flags"], list)


def test_u8_weights_keep_every_dequantised_value():
    _, weights = worst_case_operands()
    model = qdq_matmul_model(weights, weight_zero_point=-3)
    assert int8.saturating_weights(model) == ["w_q"]
    converted = int8.with_u8_weights(model)
    tensors = {t.name: numpy_helper.to_array(t) for t in converted.graph.initializer}
    weight_dq = next(n for n in converted.graph.node if n.op_type == "DequantizeLinear" and n.input[0] == "w_q")
    q, zero = tensors["w_q"], tensors[weight_dq.input[2]]
    assert q.dtype == np.uint8 and zero.dtype == np.uint8
    np.testing.assert_array_equal(q.astype(np.int64) - zero.astype(np.int64), weights.astype(np.int64) + 3)
    assert int8.saturating_weights(converted) == []
    # the activations' own zero point (uint8) is untouched
    assert tensors["zero_u8"].dtype == np.uint8 and int(tensors["zero_u8"]) == 0


def test_seven_bit_weights_are_not_converted():
    _, weights = worst_case_operands()
    small = np.clip(weights, -64, 64).astype(np.int8)
    assert int8.saturating_weights(qdq_matmul_model(small)) == []


@pytest.mark.parametrize("form", ["as chosen for this cpu", "u8 weights"])
def test_qdq_integer_path_sums_exactly(tmp_path, form):
    """The fused integer path (QLinearMatMul) on worst-case operands equals int64 numpy, on any CPU."""
    activations, weights = worst_case_operands()
    model = qdq_matmul_model(weights)
    exact = activations.astype(np.int64) @ weights.astype(np.int64)  # (5, N); pair sums reach 64770
    if form == "u8 weights":
        got = run(int8.with_u8_weights(model), {"x": activations.astype(np.float32)})
    else:
        path = tmp_path / "model.onnx"
        onnx.save(model, str(path))
        session, described = open_session(path, "int8", ["CPUExecutionProvider"])
        got = session.run(None, {"x": activations.astype(np.float32)})[0]
        assert described.startswith("int8 exact integer")
    np.testing.assert_array_equal(got.astype(np.int64), exact)


def test_matmul_integer_in_u8_form_and_in_reference_is_exact():
    activations, weights = worst_case_operands(seed=1)
    model = matmul_integer_model(weights)
    exact = activations.astype(np.int64) @ weights.astype(np.int64)
    np.testing.assert_array_equal(run(int8.with_u8_weights(model), {"a": activations}).astype(np.int64), exact)
    reference = int8.reference_model(model)
    assert not any(node.op_type == "MatMulInteger" for node in reference.graph.node)
    got = run(reference, {"a": activations}, int8.REFERENCE_SESSION_CONFIG)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got.astype(np.int64), exact)


def test_reference_session_computes_qdq_as_float():
    """Q/DQ as float: x quantised (round half to even, clip) then the float MatMul, to the last bit
    that float32 sums of integers below 2**24 keep."""
    rng = np.random.default_rng(3)
    _, weights = worst_case_operands()
    x = rng.uniform(-20, 300, size=(4, K)).astype(np.float32)
    model = qdq_matmul_model(weights)
    got = run(int8.reference_model(model), {"x": x}, int8.REFERENCE_SESSION_CONFIG)
    x_q = np.clip(np.rint(x), 0, 255).astype(np.int64)
    np.testing.assert_array_equal(got.astype(np.int64), x_q @ weights.astype(np.int64))
