"""The roofline of a model benchmark: this machine's own GEMM rate, and each model's FLOPs per window.

    python loadtest/roofline.py [--threads 2] [--seconds 15]       # prints the measured GEMM rates (JSON)

Used by bench_families.py, bench_ast.py, bench_beats_clap.py and bench_yamnet.py, which measure the
rate in the same run as the models and report each contender's achieved fraction of it:

- `measure_gemm_rates(threads)`: matrix multiplies **on ONNX Runtime's own kernels** (MLAS, the ones
  the bundles run), in sessions set up as earshot's Runner sets them up (full optimisation,
  sequential, the same intra-op threads, spinning off), the weight a constant as in a bundle (so
  MLAS prepacks it): fp32 `MatMul` (GFLOP/s); int8 `com.microsoft.DynamicQuantizeMatMul` (what
  dynamically quantised bundles run after ONNX Runtime's fusions: the activation quantised to u8
  on the fly, times s8 weights) and `MatMulInteger` u8 x s8 (GOP/s); and torch's fp32 `torch.mm`,
  for the PyTorch peers. Several shapes, best of several timed repeats after a warm-up, within a
  bounded time.
- `torch_flops(module, *inputs)`: FLOPs of one forward, counted by torch.utils.flop_counter
  (matmuls, convolutions and attention; attention runs on the math backend while counting so that
  its two matmuls are seen). `onnx_flops(model, shapes)`: 2 x the MACs of Conv / MatMul / Gemm (and
  their integer forms) of an ONNX graph, from shape inference, for graphs that have no PyTorch
  source (YAMNet). Neither counts FFTs, norms, softmax or elementwise work.
- `roofline(windows_per_s, flops_per_window, rate)`: achieved GFLOP/s, the fraction of the rate,
  and the bound (the windows/s the rate would give if every FLOP ran at it).
- `machine()`: the CPU, its core count and the SIMD flags that choose the kernels.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

LOADTEST = Path(__file__).resolve().parent
REPO = LOADTEST.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(LOADTEST))

import bench  # noqa: E402  (loadtest/bench.py: machine(), machine_busy_cpu_s())

# (M, K, N): two squares, and a transformer layer's MLP at batch 4 x 512 tokens x 768 wide
GEMM_SHAPES = ((1024, 1024, 1024), (2048, 2048, 2048), (2048, 768, 3072))
GEMM_SECONDS = 15.0
GEMM_REPEATS = 5
# the kernels measured: name -> unit; "int8" is the best of the two integer kernels
KERNELS = {
    "ort_matmul_fp32": "GFLOP/s",
    "ort_dynamic_quantize_matmul_u8s8": "GOP/s",
    "ort_matmul_integer_u8s8": "GOP/s",
    "torch_mm_fp32": "GFLOP/s",
}
CPU_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
)


# -- the machine -------------------------------------------------------------------------------------
def machine() -> dict:
    """bench.py's machine() (CPU model, core count, platform, Python, load) plus the SIMD flags."""
    info = bench.machine()
    flags: set[str] = set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        line = next((x for x in cpuinfo.read_text(errors="replace").splitlines() if x.startswith("flags")), "")
        flags = set(line.partition(":")[2].split())
    info["cpu_flags"] = [flag for flag in CPU_FLAGS if flag in flags]
    info["affinity_cpus"] = len(os.sched_getaffinity(0))
    return info


def describe(info: Mapping) -> str:
    """One line for a table's caption: CPU, cores, flags."""
    flags = " ".join(info.get("cpu_flags", [])) or "none of interest"
    return f"`{info['cpu_model']}`, {info['cpu_count']} logical CPUs, flags: {flags}"


# -- the GEMM rate -----------------------------------------------------------------------------------
def _gemm_model(kind: str, m: int, k: int, n: int, seed: int = 0):
    """A one-node ONNX model: input A (m, k), the weight B (k, n) a constant, output (m, n)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    if kind == "ort_matmul_fp32":
        weights = [numpy_helper.from_array(rng.standard_normal((k, n), dtype=np.float32), "b")]
        node = helper.make_node("MatMul", ["a", "b"], ["y"])
        a_type, y_type = TensorProto.FLOAT, TensorProto.FLOAT
    else:  # int8 weights in 7 bits, as the export's default scheme (s7) stores them
        b = numpy_helper.from_array(rng.integers(-64, 64, (k, n), dtype=np.int8), "b")
        b_zero = numpy_helper.from_array(np.array(0, dtype=np.int8), "b_zero")
        if kind == "ort_dynamic_quantize_matmul_u8s8":
            b_scale = numpy_helper.from_array(np.array(0.01, dtype=np.float32), "b_scale")
            weights = [b, b_scale, b_zero]
            node = helper.make_node(
                "DynamicQuantizeMatMul", ["a", "b", "b_scale", "b_zero"], ["y"], domain="com.microsoft"
            )
            a_type, y_type = TensorProto.FLOAT, TensorProto.FLOAT
        else:
            a_zero = numpy_helper.from_array(np.array(128, dtype=np.uint8), "a_zero")
            weights = [b, a_zero, b_zero]
            node = helper.make_node("MatMulInteger", ["a", "b", "a_zero", "b_zero"], ["y"])
            a_type, y_type = TensorProto.UINT8, TensorProto.INT32
    graph = helper.make_graph(
        [node],
        f"gemm_{kind}_{m}x{k}x{n}",
        [helper.make_tensor_value_info("a", a_type, [m, k])],
        [helper.make_tensor_value_info("y", y_type, [m, n])],
        weights,
    )
    opsets = [helper.make_opsetid("", 13), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets, ir_version=8)
    onnx.checker.check_model(model)
    return model


def _activations(kind: str, m: int, k: int) -> np.ndarray:
    rng = np.random.default_rng(1)
    if kind == "ort_matmul_integer_u8s8":
        return rng.integers(0, 256, (m, k), dtype=np.uint8)  # (m, k)
    return rng.standard_normal((m, k), dtype=np.float32)  # (m, k)


def _best_seconds_per_call(call, slot_s: float, repeats: int) -> tuple[float, int, int]:
    """Seconds per call, best of up to `repeats` timed repeats (at least 2) within `slot_s`, after a
    warm-up call and a calibrating one; each repeat runs enough calls to last about slot_s / (repeats + 1)."""
    began = time.perf_counter()
    call()  # warm-up (prepacking, first allocations)
    start = time.perf_counter()
    call()
    first = time.perf_counter() - start
    calls = max(1, int(slot_s / (repeats + 1) / max(first, 1e-9)))
    best, done = math.inf, 0
    while done < repeats and (done < 2 or time.perf_counter() - began < slot_s):
        start = time.perf_counter()
        for _ in range(calls):
            call()
        best = min(best, (time.perf_counter() - start) / calls)
        done += 1
    return best, calls, done


def measure_gemm_rates(
    threads: int,
    shapes: Sequence[tuple[int, int, int]] = GEMM_SHAPES,
    seconds: float = GEMM_SECONDS,
    repeats: int = GEMM_REPEATS,
    torch_mm: bool = True,
) -> dict:
    """This machine's matrix-multiply rate on ONNX Runtime's kernels (and torch.mm's, if torch_mm),
    at `threads` intra-op threads: per kernel and shape, 2*M*K*N / the best repeat's seconds per
    call; each kernel's rate is its best shape's. About `seconds` in all."""
    import onnxruntime

    from earshot.engine.runner import RunnerConfig, session_options

    kinds = [kind for kind in KERNELS if torch_mm or not kind.startswith("torch")]
    slot_s = seconds / (len(kinds) * len(shapes))
    kernels: dict[str, dict] = {}
    before_machine, before_self, began = bench.machine_busy_cpu_s(), time.process_time(), time.perf_counter()
    for kind in kinds:
        by_shape = {}
        for m, k, n in shapes:
            if kind == "torch_mm_fp32":
                call = _torch_mm_call(threads, m, k, n)
            else:
                config = RunnerConfig(("cpu",), threads, 1, Path(tempfile.gettempdir()))
                session = onnxruntime.InferenceSession(
                    _gemm_model(kind, m, k, n).SerializeToString(), session_options(config), ["CPUExecutionProvider"]
                )
                feeds = {"a": _activations(kind, m, k)}
                call = lambda s=session, f=feeds: s.run(None, f)  # noqa: E731
            per_call, calls, done = _best_seconds_per_call(call, slot_s, repeats)
            by_shape[f"{m}x{k}x{n}"] = {
                "rate": 2.0 * m * k * n / per_call / 1e9,
                "ms_per_call": per_call * 1e3,
                "calls_per_repeat": calls,
                "repeats": done,
            }
        kernels[kind] = {
            "unit": KERNELS[kind],
            "rate": max(entry["rate"] for entry in by_shape.values()),
            "by_shape": by_shape,
        }
    wall = time.perf_counter() - began
    others = bench.machine_busy_cpu_s() - before_machine - (time.process_time() - before_self)
    return {
        **_headline_rates(kernels),
        "kernels": kernels,
        "threads": threads,
        "shapes": [list(shape) for shape in shapes],
        "max_repeats": repeats,
        "seconds": wall,
        "other_processes_cpu_cores": max(0.0, others) / wall,
        "session": "as earshot's Runner: ORT_ENABLE_ALL, sequential, intra-op spinning off; weight a constant",
        "versions": _versions(),
    }


def _headline_rates(kernels: Mapping[str, Mapping]) -> dict:
    """The rates a roofline uses, from the per-kernel entries: fp32 MatMul, the best u8s8 kernel, torch.mm."""
    return {
        "fp32_gflops": kernels["ort_matmul_fp32"]["rate"],
        "int8_gops": max(kernels[kind]["rate"] for kind in kernels if "u8s8" in kind),
        "torch_fp32_gflops": kernels["torch_mm_fp32"]["rate"] if "torch_mm_fp32" in kernels else None,
    }


def best_gemm_rates(measurements: Sequence[Mapping]) -> dict:
    """Several measure_gemm_rates() of one run (e.g. at its start and its end) as one: each kernel's
    best rate. A neighbour's burst of load only ever lowers a measured rate, so the best is the
    machine's; each measurement is kept under "measurements"."""
    kinds = [kind for kind in KERNELS if all(kind in m["kernels"] for m in measurements)]
    kernels = {
        kind: max(measurements, key=lambda m, k=kind: m["kernels"][k]["rate"])["kernels"][kind] for kind in kinds
    }
    return {
        **_headline_rates(kernels),
        "kernels": kernels,
        "threads": measurements[0]["threads"],
        "shapes": measurements[0]["shapes"],
        "versions": measurements[0]["versions"],
        "other_processes_cpu_cores": [m["other_processes_cpu_cores"] for m in measurements],
        "measurements": list(measurements),
    }


def _torch_mm_call(threads: int, m: int, k: int, n: int):
    import torch

    torch.set_num_threads(threads)
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(m, k, generator=generator)  # (m, k)
    b = torch.randn(k, n, generator=generator)  # (k, n)
    out = torch.empty(m, n)  # (m, n)

    def call():
        with torch.inference_mode():
            torch.mm(a, b, out=out)

    return call


def _versions() -> dict:
    import onnxruntime

    versions = {"onnxruntime": onnxruntime.__version__, "numpy": np.__version__}
    try:
        import torch

        versions["torch"] = torch.__version__
    except ImportError:
        pass
    return versions


# -- FLOPs per window --------------------------------------------------------------------------------
def torch_flops(module, *inputs) -> dict:
    """FLOPs of `module(*inputs)`: {"flops": total, "by_op": {aten op: flops}} (FlopCounterMode;
    a multiply-add is 2 FLOPs). Attention runs on the math backend meanwhile: the fused CPU kernel
    is not in the counter's registry, its matmuls are."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), sdpa_kernel(SDPBackend.MATH), counter:
        module(*inputs)
    by_op = {str(op): int(flops) for op, flops in counter.get_flop_counts().get("Global", {}).items()}
    return {"flops": int(counter.get_total_flops()), "by_op": by_op}


def window_flops(module, window_samples: int) -> dict:
    """torch_flops of a waveform-in module (the one a bundle is exported from) on one full window:
    waveform (1, window_samples), num_samples (1,)."""
    import torch

    waveform = torch.zeros(1, window_samples)  # (1, W): the count does not depend on the values
    num_samples = torch.full((1,), window_samples, dtype=torch.int64)  # (1,)
    return torch_flops(module, waveform, num_samples)


# op -> index of the input whose last dim is the reduction (MatMul-like) or the weight (Conv-like)
_MATMULS = {"MatMul": 0, "MatMulInteger": 0, "QLinearMatMul": 0, "FusedMatMul": 0, "DynamicQuantizeMatMul": 0}
_CONVS = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3}


def onnx_flops(model, input_shapes: Mapping[str, Sequence[int]]) -> dict:
    """2 x the MACs of the Conv / MatMul / Gemm nodes (and their integer forms) of an ONNX graph
    with its inputs fixed to `input_shapes`: {"flops", "by_op", "unresolved": node names whose
    shapes inference could not give}. Conv: |Y| x C_in/group x kernel; MatMul: |Y| x K; Gemm: |Y| x K."""
    import onnx

    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    model = onnx.ModelProto.FromString(model.SerializeToString())  # a copy: its inputs are rewritten
    for value in model.graph.input:
        if value.name in input_shapes:
            dims = value.type.tensor_type.shape.dim
            for dim, size in zip(dims, input_shapes[value.name], strict=True):
                dim.Clear()
                dim.dim_value = int(size)
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    shapes: dict[str, list[int | None]] = {t.name: list(t.dims) for t in inferred.graph.initializer}
    for value in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        if value.type.HasField("tensor_type") and value.type.tensor_type.HasField("shape"):
            dims = value.type.tensor_type.shape.dim
            shapes[value.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]

    def known(name: str) -> list[int] | None:
        shape = shapes.get(name)
        return shape if shape is not None and all(d is not None for d in shape) else None  # type: ignore[return-value]

    by_op: dict[str, int] = {}
    unresolved: list[str] = []
    for node in inferred.graph.node:
        if node.op_type not in _MATMULS and node.op_type not in _CONVS and node.op_type != "Gemm":
            continue
        out = known(node.output[0])
        if node.op_type in _CONVS:
            weight = known(node.input[_CONVS[node.op_type]])
            macs = None if out is None or weight is None else math.prod(out) * math.prod(weight[1:])
        elif node.op_type == "Gemm":
            a = known(node.input[0])
            trans_a = next((attr.i for attr in node.attribute if attr.name == "transA"), 0)
            macs = None if out is None or a is None else math.prod(out) * a[0 if trans_a else 1]
        else:
            a = known(node.input[_MATMULS[node.op_type]])
            macs = None if out is None or a is None else math.prod(out) * a[-1]
        if macs is None:
            unresolved.append(node.name or node.op_type)
            continue
        by_op[node.op_type] = by_op.get(node.op_type, 0) + 2 * macs
    return {"flops": sum(by_op.values()), "by_op": by_op, "unresolved": unresolved}


FUSED_ATTENTION = {"Attention", "MultiHeadAttention", "QAttention", "PackedAttention", "GroupQueryAttention"}


def bundle_flops(bundle_path: Path, manifest) -> dict:
    """onnx_flops of a bundle's graph at batch 1, or {"flops": None, "reason"} where that count would be
    short: a fused attention node (its matmuls are not Conv / MatMul / Gemm nodes) or a node whose
    shapes inference cannot give (the integer MatMuls of a dynamically quantised graph). Such a
    bundle's FLOPs come from its PyTorch source (bench_families.py counts them with torch)."""
    import onnx

    model = onnx.load(str(bundle_path / manifest.model_file))
    fused = sorted({node.op_type for node in model.graph.node if node.op_type in FUSED_ATTENTION})
    shapes = {spec.name: [1 if dim == "batch" else dim for dim in spec.shape] for spec in manifest.inputs}
    counted = onnx_flops(model, shapes)
    if fused or counted["unresolved"]:
        reason = (f"fused attention ({', '.join(fused)})" if fused else "") + (
            f"{'; ' if fused else ''}{len(counted['unresolved'])} nodes without inferred shapes"
            if counted["unresolved"] else "")
        return {"flops": None, "reason": f"the graph's count would be short: {reason}", "partial": counted}
    return counted


# -- the roofline -------------------------------------------------------------------------------------
def achieved_fraction(windows_per_s: float, flops_per_window: float, rate: float) -> float:
    """The fraction of `rate` (GFLOP/s or GOP/s) that windows_per_s windows of flops_per_window FLOPs make."""
    return windows_per_s * flops_per_window / (rate * 1e9)


def roofline(windows_per_s: float, flops_per_window: float, rate: float, rate_name: str) -> dict:
    """A contender's row: achieved GFLOP/s, its fraction of the measured `rate`, and the bound
    (windows/s at that rate) = windows_per_s / fraction."""
    return {
        "gflop_per_window": flops_per_window / 1e9,
        "achieved_gflops": windows_per_s * flops_per_window / 1e9,
        "rate_used": rate_name,
        "rate_gflops": rate,
        "fraction_of_rate": achieved_fraction(windows_per_s, flops_per_window, rate),
        "bound_windows_per_s": rate * 1e9 / flops_per_window,
    }


def at_rate(windows_per_s: float, flops_per_window: float, gemm: Mapping, kind: str) -> dict:
    """roofline() at the run's measured rate of `kind` (gemm: measure_gemm_rates or best_gemm_rates):
    "int8" for int8 bundles, "fp32" for fp32 bundles and PyTorch peers."""
    rate = gemm["int8_gops"] if kind == "int8" else gemm["fp32_gflops"]
    return roofline(windows_per_s, flops_per_window, rate, f"onnxruntime {kind}")


def table(rows: Sequence[tuple[str, float, Mapping]]) -> str:
    """A plain-text table of (contender, windows/s, its roofline() entry)."""
    lines = [
        f"{'contender':<36}{'windows/s':>11}{'GFLOP/window':>14}{'achieved GFLOP/s':>18}"
        f"{'fraction of rate':>24}{'bound windows/s':>17}"
    ]
    for name, rate, entry in rows:
        fraction = f"{entry['fraction_of_rate']:.3f} of {entry['rate_gflops']:.0f} {entry['rate_used'].split()[-1]}"
        lines.append(
            f"{name:<36}{rate:>11.2f}{entry['gflop_per_window']:>14.3g}{entry['achieved_gflops']:>18.1f}"
            f"{fraction:>24}{entry['bound_windows_per_s']:>17.2f}"
        )
    return "\n".join(lines)


def gemm_summary(gemm: Mapping) -> str:
    """One line: the measured rates (of measure_gemm_rates or best_gemm_rates)."""
    torch_rate = gemm.get("torch_fp32_gflops")
    others = gemm["other_processes_cpu_cores"]
    others = others if isinstance(others, list) else [others]
    return (
        f"measured GEMM rate ({gemm['threads']} threads): ONNX Runtime fp32 MatMul {gemm['fp32_gflops']:.0f} GFLOP/s, "
        f"int8 u8s8 {gemm['int8_gops']:.0f} GOP/s"
        + (f", torch.mm fp32 {torch_rate:.0f} GFLOP/s" if torch_rate else "")
        + (f" (best of {len(others)} measurements; " if len(others) > 1 else " (")
        + f"other procs' cores meanwhile {', '.join(f'{c:.2f}' for c in others)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seconds", type=float, default=GEMM_SECONDS)
    args = parser.parse_args()
    report = {"machine": machine(), "gemm": measure_gemm_rates(args.threads, seconds=args.seconds)}
    print(json.dumps(report, indent=2))
    print(gemm_summary(report["gemm"]))


if __name__ == "__main__":
    main()
