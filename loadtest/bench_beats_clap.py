"""BEATs-base and CLAP (HTS-AT base) windows/s: earshot's fp32 and int8 bundles vs the same PyTorch module.

    python loadtest/bench_beats_clap.py [--windows 8] [--batch 4] [--threads 2] [--gemm-seconds 10] [--out loadtest/results/beats_clap.json]
    python loadtest/bench_beats_clap.py --fusion-ab [--rounds 2] [--out loadtest/results/beats_clap_fusion.json]

--fusion-ab: only fp32, the fused bundle (attention as com.microsoft.MultiHeadAttention, see
earshot_export/fusion.py) against the `--no-fuse` one (standard ONNX operators), timed in
alternation in the same run (best of each).

Random weights in base shapes (speed does not depend on the values): BEATs iter3 (512-wide patch
embedding, 12 layers, 768 wide, 12 heads, gated relative position bias, deep norm, 527 classes) on
10 s windows at 16 kHz, written in BEATs' own .pt layout and exported with `beats:`; CLAP's
HTS-AT base (Swin 96-768, depths 2-2-6-2, window 8, 512-d projection) on 10 s windows at 48 kHz,
saved by transformers' ClapModel and exported with `hf:` (embedding only). Every contender runs the
whole waveform-in model (frontend included); the baseline is our PyTorch module in eager mode.
The roofline (roofline.py): the machine's GEMM rate on ONNX Runtime's kernels, measured in the same
run (half before the models, half after; the best), each family's FLOPs per window (counted on the
PyTorch module), and each contender's achieved fraction of the rate (int8 for int8 bundles, fp32
for the others).
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
sys.path.insert(0, str(REPO / "tests" / "models"))  # beats_fixtures: random files in BEATs' layout
AUDIO_DIR = REPO.parent / "shared" / "audio"

BEATS_BASE_CFG = {
    "input_patch_size": 16, "embed_dim": 512, "conv_bias": False, "encoder_layers": 12, "encoder_embed_dim": 768,
    "encoder_ffn_embed_dim": 3072, "encoder_attention_heads": 12, "activation_fn": "gelu",
    "layer_norm_first": False, "deep_norm": True, "conv_pos": 128, "conv_pos_groups": 16,
    "relative_position_embedding": True, "num_buckets": 320, "max_distance": 800, "gru_rel_pos": True,
    "finetuned_model": True, "predictor_class": 527,
}


def load_windows(count: int, sample_rate: int, window_samples: int) -> list[np.ndarray]:
    from earshot.engine.audio import AudioLimits, decode

    sources = sorted(p for p in AUDIO_DIR.iterdir() if p.is_file() and p.suffix in (".flac", ".ogg"))
    windows = []
    for index in range(count):
        wave = decode(sources[index % len(sources)].read_bytes(), sample_rate, AudioLimits(1 << 30, 3600)).waveform
        windows.append(np.resize(wave, window_samples).astype(np.float32))
    return windows


def timed(run, batches) -> float:
    run(batches[0])  # warm-up
    best = float("inf")
    for _ in range(2):
        start = time.perf_counter()
        for batch in batches:
            run(batch)
        best = min(best, time.perf_counter() - start)
    return best


def bench_torch(module, batches, threads: int) -> float:
    import torch

    torch.set_num_threads(threads)

    def run(batch):
        with torch.inference_mode():
            module(torch.from_numpy(batch), torch.full((len(batch),), batch.shape[1], dtype=torch.int64))

    return timed(run, batches)


def bench_bundle(path: Path, batches, threads: int) -> float:
    import onnxruntime as ort

    from earshot import bundle

    loaded = bundle.load(path)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(loaded.model_path), options, providers=["CPUExecutionProvider"])

    def run(batch):
        feeds = {"waveform": batch, "num_samples": np.full(len(batch), batch.shape[1], dtype=np.int64)}
        session.run(None, {i.name: feeds[i.name] for i in session.get_inputs()})

    return timed(run, batches)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def fusion_ab(model, family: str, work: Path, batches, threads: int, rounds: int) -> dict:
    """fp32 fused vs unfused: windows/s of each (best over `rounds` alternations) and the ratio."""
    from earshot_export.onnx_export import export_bundle

    windows = sum(len(batch) for batch in batches)
    paths = {}
    row: dict = {}
    for name, fuse in (("fused", True), ("unfused", False)):
        paths[name] = work / f"{family}-fp32-{name}"
        built = export_bundle(model, paths[name], "fp32", parity_audio=[batches[0][0], batches[0][-1]], fuse=fuse)
        row[f"{name}_parity_min_cosine"] = built.manifest.parity["min_embedding_cosine"]
        row[f"{name}_operators"] = built.manifest.notes["fused_operators"]
    best = {name: float("inf") for name in paths}
    for _ in range(rounds):
        for name, path in paths.items():
            best[name] = min(best[name], bench_bundle(path, batches, threads))
    for name, seconds in best.items():
        row[f"{name}_windows_per_s"] = windows / seconds
        print(f"{family} fp32 {name}: {windows / seconds:.2f} windows/s", flush=True)
    row["fused_vs_unfused"] = row["fused_windows_per_s"] / row["unfused_windows_per_s"]
    return row


def make_models(work: Path):
    import torch
    from beats_fixtures import write_beats_file
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel

    from earshot_export.loaders.beats import load_beats
    from earshot_export.loaders.clap import load_clap

    beats_file = write_beats_file(work / "beats-base.pt", BEATS_BASE_CFG, seed=0)
    torch.manual_seed(0)
    text = dict(hidden_size=64, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    clap_dir = work / "clap-htsat-base"
    ClapModel(ClapConfig(text_config=text)).eval().save_pretrained(clap_dir)  # ClapAudioConfig(): HTS-AT base
    ClapFeatureExtractor(frequency_min=50, frequency_max=14000, truncation="rand_trunc").save_pretrained(clap_dir)
    return {"beats_base": load_beats(str(beats_file)), "clap_htsat_base": load_clap(str(clap_dir))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, default=None,
                        help="default loadtest/results/beats_clap.json (beats_clap_fusion.json with --fusion-ab)")
    parser.add_argument("--fusion-ab", action="store_true", help="fp32 fused vs --no-fuse graphs only")
    parser.add_argument("--rounds", type=int, default=2, help="alternations of --fusion-ab")
    parser.add_argument("--gemm-seconds", type=float, default=10.0, help="the GEMM rate measurement, in all")
    args = parser.parse_args()

    import roofline  # loadtest/roofline.py
    from earshot_export.onnx_export import export_bundle

    gemm = [roofline.measure_gemm_rates(args.threads, seconds=args.gemm_seconds / 2)]
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as work:
        for family, model in make_models(Path(work)).items():
            windows = load_windows(args.windows, model.sample_rate, model.window_samples)
            batches = [np.stack(windows[i : i + args.batch]) for i in range(0, len(windows), args.batch)]
            row = {"window_seconds": model.window_samples / model.sample_rate,
                   "flops_per_window": roofline.window_flops(model.module, model.window_samples)["flops"]}
            if args.fusion_ab:
                row.update(fusion_ab(model, family, Path(work), batches, args.threads, args.rounds))
                results[family] = row
                continue
            seconds = bench_torch(model.module, batches, args.threads)
            row["torch_eager_windows_per_s"] = len(windows) / seconds
            print(f"{family} torch eager: {len(windows) / seconds:.2f} windows/s", flush=True)
            for precision in ("fp32", "int8"):
                out = Path(work) / f"{family}-{precision}"
                export_bundle(model, out, precision, parity_audio=windows[:2])
                seconds = bench_bundle(out, batches, args.threads)
                row[f"earshot_{precision}_windows_per_s"] = len(windows) / seconds
                row[f"earshot_{precision}_vs_torch_eager"] = row[f"earshot_{precision}_windows_per_s"] / row[
                    "torch_eager_windows_per_s"]
                row[f"{precision}_model_bytes"] = (out / "model.onnx").stat().st_size
                print(f"{family} earshot {precision}: {len(windows) / seconds:.2f} windows/s", flush=True)
            results[family] = row

    gemm.append(roofline.measure_gemm_rates(args.threads, seconds=args.gemm_seconds / 2))
    rates = roofline.best_gemm_rates(gemm)
    print(roofline.gemm_summary(rates))
    for family, row in results.items():  # each contender's roofline, beside its windows/s
        contenders = [key.removesuffix("_windows_per_s") for key in row if key.endswith("_windows_per_s")]
        row["roofline"] = {name: roofline.at_rate(row[f"{name}_windows_per_s"], row["flops_per_window"], rates,
                                                  "int8" if "int8" in name else "fp32") for name in contenders}
        print(f"{family}:\n" + roofline.table([(name, row[f"{name}_windows_per_s"], entry)
                                                for name, entry in row["roofline"].items()]))
    report = {
        "benchmark": "BEATs-base and CLAP HTS-AT base (random weights), one 10 s window per item, frontend included",
        "machine": {"cpu_count": os.cpu_count(), "threads": args.threads, "platform": platform.platform(),
                    "processor": platform.processor(), "cpu_model": cpu_model()},
        "mode": "fusion-ab (fp32 fused vs --no-fuse)" if args.fusion_ab else "torch eager vs fp32 / int8 bundles",
        "windows": args.windows,
        "batch": args.batch,
        "results": results,
        "gemm": rates,
        "cpu_flags": roofline.machine()["cpu_flags"],
    }
    if args.out is None:
        args.out = REPO / "loadtest" / "results" / ("beats_clap_fusion.json" if args.fusion_ab else "beats_clap.json")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
