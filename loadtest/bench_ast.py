"""AST-base on 10 s clips: `transformers` eager PyTorch vs earshot's fp32 and int8 bundles.

    python loadtest/bench_ast.py [--clips 16] [--batch 4] [--threads 2] [--gemm-seconds 10] [--out loadtest/results/ast.json]

One run, one machine, the same clips for every contender. The model is AST-base shaped (12 layers,
768 wide, 12 heads, 1024 frames, 128 mel bins, 527 classes) with random weights: speed does not
depend on the values. Each contender includes its frontend: `ASTFeatureExtractor` (numpy) +
`ASTForAudioClassification` for transformers; the whole waveform-in graph for the bundles.
It also prints the operator counts of the graph ONNX Runtime actually runs (after its optimiser),
to show whether attention, LayerNorm and GELU were fused, and the roofline (roofline.py): the
machine's GEMM rate on ONNX Runtime's kernels, measured in the same run (half before the models,
half after; the best), the FLOPs per window of the PyTorch module the bundles are exported from, and
each contender's achieved fraction of the rate (int8 for the int8 bundle, fp32 for the others).
"""

from __future__ import annotations

import argparse
import collections
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
SAMPLE_RATE = 16000
CLIP_SECONDS = 10.0


def load_clips(count: int) -> list[np.ndarray]:
    """`count` 10 s clips cut from the shared recordings (looped where shorter)."""
    from earshot.engine.audio import AudioLimits, decode

    sources = sorted(p for p in AUDIO_DIR.iterdir() if p.is_file() and p.suffix in (".flac", ".ogg"))
    length = int(CLIP_SECONDS * SAMPLE_RATE)
    clips = []
    for index in range(count):
        data = sources[index % len(sources)].read_bytes()
        wave = decode(data, SAMPLE_RATE, AudioLimits(max_bytes=1 << 30, max_seconds=3600)).waveform
        clips.append(np.resize(wave, length).astype(np.float32))
    return clips


def make_checkpoint(directory: Path) -> Path:
    import torch
    from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification

    torch.manual_seed(0)
    config = ASTConfig(num_labels=527)  # AST-base: 12 x 768, 12 heads, 1024 frames, strides 10/10
    ASTForAudioClassification(config).eval().save_pretrained(directory)
    ASTFeatureExtractor().save_pretrained(directory)  # AudioSet's defaults: 128 mel, 1024 frames
    return directory


def timed(run, batches, warmup: int = 1) -> float:
    """Seconds per pass over all batches, best of two passes after warm-up."""
    for batch in batches[:warmup]:
        run(batch)
    best = float("inf")
    for _ in range(2):
        start = time.perf_counter()
        for batch in batches:
            run(batch)
        best = min(best, time.perf_counter() - start)
    return best


def bench_transformers(checkpoint: Path, batches, threads: int) -> float:
    import torch
    from transformers import ASTFeatureExtractor, ASTForAudioClassification

    torch.set_num_threads(threads)
    extractor = ASTFeatureExtractor.from_pretrained(checkpoint)
    model = ASTForAudioClassification.from_pretrained(checkpoint, attn_implementation="eager").eval()

    def run(batch):
        features = extractor(list(batch), sampling_rate=SAMPLE_RATE, return_tensors="np")
        with torch.inference_mode():
            model(input_values=torch.from_numpy(features["input_values"]))

    return timed(run, batches)


def bench_bundle(path: Path, batches, threads: int) -> tuple[float, dict[str, int]]:
    import onnxruntime as ort

    from earshot import bundle

    loaded = bundle.load(path)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    optimized = Path(tempfile.mkdtemp()) / "optimized.onnx"
    options.optimized_model_filepath = str(optimized)
    session = ort.InferenceSession(str(loaded.model_path), options, providers=["CPUExecutionProvider"])
    window = loaded.manifest.window_samples

    def run(batch):
        waveform = np.zeros((len(batch), window), dtype=np.float32)
        num_samples = np.zeros(len(batch), dtype=np.int64)
        for row, clip in enumerate(batch):
            n = min(len(clip), window)
            waveform[row, :n] = clip[:n]
            num_samples[row] = n
        feeds = {"waveform": waveform, "num_samples": num_samples}
        session.run(None, {i.name: feeds[i.name] for i in session.get_inputs()})

    seconds = timed(run, batches)
    import onnx

    ops = collections.Counter(node.op_type for node in onnx.load(str(optimized)).graph.node)
    return seconds, dict(ops.most_common())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--gemm-seconds", type=float, default=10.0, help="the GEMM rate measurement, in all")
    parser.add_argument("--out", type=Path, default=REPO / "loadtest" / "results" / "ast.json")
    args = parser.parse_args()

    import roofline  # loadtest/roofline.py
    from earshot_export.loaders.ast import load_hf
    from earshot_export.onnx_export import export_bundle

    gemm = [roofline.measure_gemm_rates(args.threads, seconds=args.gemm_seconds / 2)]
    clips = load_clips(args.clips)
    batches = [clips[i : i + args.batch] for i in range(0, len(clips), args.batch)]
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as work:
        checkpoint = make_checkpoint(Path(work) / "ast-base")
        seconds = bench_transformers(checkpoint, batches, args.threads)
        results["transformers_eager"] = {"clips_per_s": len(clips) / seconds}
        print(f"transformers eager: {len(clips) / seconds:.2f} clips/s", flush=True)
        model = load_hf(str(checkpoint), name="ast-base-random")
        flops = roofline.window_flops(model.module, model.window_samples)["flops"]  # one window per clip
        for precision in ("fp32", "int8"):
            out = Path(work) / f"bundle-{precision}"
            export_bundle(model, out, precision, parity_audio=clips[:4])
            seconds, ops = bench_bundle(out, batches, args.threads)
            results[f"earshot_{precision}"] = {
                "clips_per_s": len(clips) / seconds,
                "model_bytes": (out / "model.onnx").stat().st_size,
                "optimized_graph_ops": ops,
            }
            print(f"earshot {precision}: {len(clips) / seconds:.2f} clips/s; ops after ORT optimiser: {ops}", flush=True)

    gemm.append(roofline.measure_gemm_rates(args.threads, seconds=args.gemm_seconds / 2))
    rates = roofline.best_gemm_rates(gemm)
    for name, result in results.items():
        result.update(roofline.at_rate(result["clips_per_s"], flops, rates, "int8" if "int8" in name else "fp32"))
    baseline = results["transformers_eager"]["clips_per_s"]
    ratios = {f"{name}_vs_transformers_eager": r["clips_per_s"] / baseline for name, r in results.items()
              if name != "transformers_eager"}
    report = {
        "benchmark": "AST-base (random weights), 10 s clips, frontend included",
        "machine": {"cpu_count": os.cpu_count(), "threads": args.threads, "platform": platform.platform(),
                    "processor": platform.processor()},
        "clips": len(clips),
        "batch": args.batch,
        "results": results,
        "ratios": ratios,
        "flops_per_window": flops,
        "gemm": rates,
        "cpu": roofline.machine(),
        "goals": {"earshot_int8_vs_transformers_eager": 3.0, "earshot_fp32_vs_transformers_eager": 1.2},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(roofline.gemm_summary(rates))
    print(roofline.table([(name, r["clips_per_s"], r) for name, r in results.items()]))
    for name, ratio in ratios.items():
        goal = report["goals"].get(name)
        print(f"{name}: {ratio:.2f}x" + (f" (goal {goal}x: {'met' if ratio >= goal else 'MISSED'})" if goal else ""))


if __name__ == "__main__":
    main()
