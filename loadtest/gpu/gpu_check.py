"""The GPU check: earshot's PyTorch encoders on CUDA against `transformers` on the same GPU.

    python loadtest/gpu/gpu_check.py --out loadtest/results/gpu          # on a GPU machine (< 8 min on an H100/H200)
    python loadtest/gpu/gpu_check.py --dry-run --out /tmp/gpu-dry         # the same code, tiny shapes, on the CPU

Needs only PyTorch (CUDA build) and this repository's `models/` on the path; `transformers`, where
installed (a wheel may travel with the script: loadtest/gpu/README.md), adds the peer rows. Per
family (AST-base, CLAP's HTS-AT audio tower, wav2vec 2.0 base; random weights at the published
geometry; 10 s clips): clips/s at batch 1, 8 and 64 under bf16 autocast (scaled-dot-product
attention, patch embedding as one conv GEMM), parity of the bf16 GPU embedding to the fp32 CPU one
(cosine), FLOPs per clip (torch's FlopCounterMode) and the achieved fraction of this GPU's measured
bf16 matmul rate. Ours runs waveform in (its frontend on the GPU too); the peer gets its features
made beforehand (its feature extractor runs on the CPU in numpy, not timed: a bound in its favour).
Writes gpu_check.json and gpu_check.md in --out.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "models"))  # earshot_models, without installing it on the GPU machine

from earshot_models.ast import ASTEncoder  # noqa: E402
from earshot_models.clap.audio import ClapAudioTower  # noqa: E402
from earshot_models.clap.config import CLAP_UNFUSED_FRONTEND, HtsatConfig  # noqa: E402
from earshot_models.clap.frontend import ClapFrontend  # noqa: E402
from earshot_models.config import AST_BASE, AST_FBANK, fbank_for_encoder  # noqa: E402
from earshot_models.frontend.kaldi_fbank import KaldiFbank  # noqa: E402
from earshot_models.speech.config import SpeechEncoderConfig  # noqa: E402
from earshot_models.speech.model import SpeechEmbeddingHead, SpeechEmbeddingModel, SpeechEncoder  # noqa: E402
from earshot_models.waveform_model import WaveformModel  # noqa: E402

HTSAT_UNFUSED = HtsatConfig(
    spec_size=256, num_mel_bins=64, patch_size=4, patch_stride=4, embed_dim=96, depths=(2, 2, 6, 2),
    num_heads=(4, 8, 16, 32), window_size=8, mlp_ratio=4.0, qkv_bias=True, patch_norm=True, layer_norm_eps=1e-5,
    batch_norm_eps=1e-5, projection_dim=512,
)
WAV2VEC2_BASE = SpeechEncoderConfig(
    family="wav2vec2", conv_dim=(512,) * 7, conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2),
    conv_bias=False, conv_norm="group", projection_norm=True, hidden_size=768, num_layers=12, num_heads=12,
    intermediate_size=3072, pos_conv="weight_norm", pos_conv_kernel=128, pos_conv_groups=16, pos_conv_depth=1,
    stable_layer_norm=False, layer_norm_eps=1e-5, relative_position=False,
)


@dataclass
class Family:
    name: str
    sample_rate: int
    window_samples: int
    ours: Callable[[], torch.nn.Module]  # (waveform, num_samples) -> (embedding, ...)
    peer: Callable[[], tuple[torch.nn.Module, Callable[[torch.Tensor], dict]]] | None  # model, waveform -> kwargs


class _SpeechWindow(torch.nn.Module):
    def __init__(self, model: SpeechEmbeddingModel):
        super().__init__()
        self.model = model

    def forward(self, waveform, num_samples):
        return self.model(waveform)


def families(dry_run: bool) -> list[Family]:
    ast_config = AST_BASE if not dry_run else dataclasses.replace(AST_BASE, depth=2, embed_dim=64, num_heads=4,
                                                                    mlp_hidden_dim=128, input_tdim=200)
    htsat = HTSAT_UNFUSED if not dry_run else dataclasses.replace(HTSAT_UNFUSED, embed_dim=16, depths=(1, 1),
                                                                     num_heads=(2, 2), window_size=16, projection_dim=32)
    speech = WAV2VEC2_BASE if not dry_run else dataclasses.replace(WAV2VEC2_BASE, conv_dim=(32,) * 7, hidden_size=32,
                                                                      num_layers=2, num_heads=2, intermediate_size=64,
                                                                      pos_conv_kernel=16, pos_conv_groups=4)
    fbank = fbank_for_encoder(AST_FBANK, ast_config)
    clap_frontend = CLAP_UNFUSED_FRONTEND if not dry_run else dataclasses.replace(CLAP_UNFUSED_FRONTEND,
                                                                                  window_samples=48000 * 2)
    speech_seconds = 10 if not dry_run else 1

    def ast_peer():
        from transformers import ASTConfig, ASTModel

        config = ASTConfig(hidden_size=ast_config.embed_dim, num_hidden_layers=ast_config.depth,
                           num_attention_heads=ast_config.num_heads, intermediate_size=ast_config.mlp_hidden_dim,
                           max_length=ast_config.input_tdim, attn_implementation="sdpa")
        frames, mel = ast_config.input_tdim, ast_config.input_fdim
        return ASTModel(config), lambda wave: {"input_values": torch.zeros(wave.shape[0], frames, mel, device=wave.device)}

    def clap_peer():
        from transformers import ClapAudioConfig, ClapAudioModelWithProjection

        config = ClapAudioConfig(patch_embeds_hidden_size=htsat.embed_dim, depths=list(htsat.depths),
                                 num_attention_heads=list(htsat.num_heads), window_size=htsat.window_size,
                                 hidden_size=htsat.num_features, projection_dim=htsat.projection_dim, enable_fusion=False)
        frames = clap_frontend.num_frames
        return ClapAudioModelWithProjection(config), lambda wave: {
            "input_features": torch.zeros(wave.shape[0], 1, frames, htsat.num_mel_bins, device=wave.device)
        }

    def speech_peer():
        from transformers import Wav2Vec2Config, Wav2Vec2Model

        config = Wav2Vec2Config(conv_dim=list(speech.conv_dim), hidden_size=speech.hidden_size,
                                num_hidden_layers=speech.num_layers, num_attention_heads=speech.num_heads,
                                intermediate_size=speech.intermediate_size, num_conv_pos_embeddings=speech.pos_conv_kernel,
                                num_conv_pos_embedding_groups=speech.pos_conv_groups, attn_implementation="sdpa")
        return Wav2Vec2Model(config), lambda wave: {"input_values": wave}

    return [
        Family("AST", 16000, fbank.window_samples,
               lambda: WaveformModel(KaldiFbank(fbank), ASTEncoder(ast_config)), ast_peer),
        Family("CLAP (HTS-AT audio)", 48000, clap_frontend.window_samples,
               lambda: WaveformModel(ClapFrontend(clap_frontend), ClapAudioTower(htsat, clap_frontend.num_frames, 0)),
               clap_peer),
        Family("wav2vec 2.0", 16000, 16000 * speech_seconds,
               lambda: _SpeechWindow(SpeechEmbeddingModel(SpeechEncoder(speech), SpeechEmbeddingHead(speech.num_layers))),
               speech_peer),
    ]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_rate(device: torch.device, dtype: torch.dtype, size: int, repeats: int) -> float:
    """FLOP/s of a square matmul at this size and dtype (the bound the models are measured against)."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b
    synchronize(device)
    began = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    return 2 * size**3 * repeats / (time.perf_counter() - began)


def clips_per_second(run: Callable[[], object], device: torch.device, batch: int, budget_s: float) -> float:
    run()
    synchronize(device)
    began, count = time.perf_counter(), 0
    while count < 3 or time.perf_counter() - began < budget_s:
        run()
        count += 1
        if count >= 50:
            break
    synchronize(device)
    return batch * count / (time.perf_counter() - began)


def first_output(output) -> torch.Tensor:
    if isinstance(output, (tuple, list)):
        return output[0]
    for name in ("audio_embeds", "pooler_output", "last_hidden_state"):
        if getattr(output, name, None) is not None:
            return getattr(output, name)
    raise TypeError(f"no embedding in {type(output)}")


def flops_per_clip(call: Callable[[], object]) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        call()
    return float(counter.get_total_flops())


def check(family: Family, device: torch.device, batches: list[int], budget_s: float, rate: float) -> dict:
    torch.manual_seed(0)
    ours = family.ours().eval()
    wave = torch.randn(max(batches), family.window_samples) * 0.1  # (B, N)
    counts = torch.full((max(batches),), family.window_samples, dtype=torch.int64)
    with torch.inference_mode():
        reference = first_output(ours(wave[:2], counts[:2])).float()  # fp32, CPU
    ours = ours.to(device)
    wave_d, counts_d = wave.to(device), counts.to(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16)

    def run_ours(batch: int):
        with torch.inference_mode(), autocast:
            return ours(wave_d[:batch], counts_d[:batch])

    got = first_output(run_ours(2)).float().cpu()
    cosine = torch.nn.functional.cosine_similarity(got.flatten(1), reference.flatten(1)).min().item()
    row: dict = {"family": family.name, "window_s": family.window_samples / family.sample_rate,
                 "bf16_vs_fp32_cpu_min_cosine": round(cosine, 6), "ours": {}, "peer": {}}
    row["ours_gflop_per_clip"] = round(flops_per_clip(lambda: run_ours(1)) / 1e9, 3)
    for batch in batches:
        speed = clips_per_second(lambda b=batch: run_ours(b), device, batch, budget_s)
        row["ours"][str(batch)] = {"clips_per_s": round(speed, 2),
                                   "fraction_of_matmul_rate": round(speed * row["ours_gflop_per_clip"] * 1e9 / rate, 4)}
    if family.peer is not None:
        try:
            peer, inputs = family.peer()
        except ImportError as error:
            row["peer"] = {"skipped": f"transformers not installed ({error})"}
            return row
        peer = peer.eval().to(device)

        def run_peer(batch: int):
            with torch.inference_mode(), autocast:
                return peer(**inputs(wave_d[:batch]))

        try:
            row["peer_gflop_per_clip"] = round(flops_per_clip(lambda: run_peer(1)) / 1e9, 3)
        except (AttributeError, RuntimeError) as error:  # weight-norm parametrizations under the counter
            row["peer_gflop_per_clip"] = f"not counted ({type(error).__name__})"
        for batch in batches:
            speed = clips_per_second(lambda b=batch: run_peer(b), device, batch, budget_s)
            row["peer"][str(batch)] = {"clips_per_s": round(speed, 2)}
            row["ours"][str(batch)]["ratio_to_peer"] = round(row["ours"][str(batch)]["clips_per_s"] / speed, 3)


    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def markdown(report: dict) -> str:
    lines = [f"GPU check on {report['device']} (torch {report['torch']}); bf16 matmul "
             f"{report['matmul_tflops']:.1f} TFLOP/s measured; {'DRY RUN (CPU, tiny shapes)' if report['dry_run'] else ''}",
             "", "| family | batch | earshot clips/s | transformers clips/s | ratio | fraction of matmul rate | cosine to fp32 CPU |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for row in report["families"]:
        for batch, ours in row["ours"].items():
            peer = row["peer"].get(batch, {}).get("clips_per_s", "-") if isinstance(row["peer"], dict) else "-"
            lines.append(f"| {row['family']} | {batch} | {ours['clips_per_s']} | {peer} | {ours.get('ratio_to_peer', '-')} | "
                         f"{ours['fraction_of_matmul_rate']} | {row['bf16_vs_fp32_cpu_min_cosine']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--dry-run", action="store_true", help="tiny shapes on the CPU: the test of this script")
    parser.add_argument("--batches", default="1,8,64")
    parser.add_argument("--budget-s", type=float, default=2.0, help="seconds of timing per family and batch")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.dry_run else "cpu")
    batches = [int(b) for b in args.batches.split(",")] if not args.dry_run else [1, 2]
    budget = args.budget_s if not args.dry_run else 0.05
    began = time.perf_counter()
    rate = matmul_rate(device, torch.bfloat16, 8192 if device.type == "cuda" else 256, 20 if device.type == "cuda" else 2)
    report = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "dry_run": args.dry_run, "matmul_tflops": rate / 1e12,
        "families": [check(family, device, batches, budget, rate) for family in families(args.dry_run)],
    }
    report["seconds"] = round(time.perf_counter() - began, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (args.out / "gpu_check.md").write_text(markdown(report), encoding="utf-8")
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
