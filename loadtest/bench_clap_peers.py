"""A peer benchmark: earshot vs Infinity serving CLAP audio embeddings, same checkpoint, same clips, same clients.

    python loadtest/bench_clap_peers.py                              # the full run (about 6 min; see below)
    python loadtest/bench_clap_peers.py --duration 10 --clips 4      # a smoke run
    python loadtest/bench_clap_peers.py --skip-peer                  # earshot + transformers only
    python loadtest/bench_clap_peers.py --markdown loadtest/results/clap_peers.json   # reprints the table

One command, one run, one machine, in order:
1. the checkpoint: a random-weights `transformers` ClapModel in the geometry of laion/clap-htsat-unfused
   (HTS-AT: Swin depths 2-2-6-2, 96..768 wide, heads 4-8-16-32, window 8, 64 mel bins, 256 x 256
   image, 48 kHz, 10 s, no fusion; RoBERTa-base text tower with a small byte-level BPE vocabulary,
   trained here, offline; projection 512), saved with save_pretrained together with a ClapProcessor
   (feature extractor with the checkpoint's own preprocessor values + tokenizer). No downloads; speed
   does not depend on the weights.
2. the peer, Infinity (`infinity-emb`, torch engine), in its OWN virtual environment (--peer-venv,
   created and filled if missing or not at the pinned versions; never a project dependency): torch
   first (PEER_TORCH: the local CPU wheel; an unpinned torch would pull a CUDA build), then PEER_PACKAGES.
3. earshot's fp32 and int8 bundles of the same checkpoint (earshot_export, source `hf:DIR`).
4. baseline, before any server: `transformers` eager in this process (ClapProcessor's feature extractor +
   ClapModel.get_audio_features, batches of --batch, torch --threads threads), no HTTP.
5. each server in turn on 127.0.0.1 (a free port), ready before it is timed, stopped after (try/finally):
   `infinity_emb v2 --engine torch --device cpu` with Infinity's own defaults otherwise (batch size 32,
   dtype auto, no compile, warm-up on; torch threads = --threads through OMP_NUM_THREADS), offline
   (HF_HUB_OFFLINE=1, TRANSFORMERS_OFFLINE=1); then `earshot serve --threads T` with each bundle (its
   defaults otherwise: max_batch_windows 32, max_wait_ms 5). Both take the same request:
   POST /embeddings (Infinity) or /v1/embeddings (earshot), byte-identical JSON
   {"model", "input": ["data:audio/wav;base64,..."], "modality": "audio", "encoding_format": "float"},
   one 10 s 48 kHz mono PCM-16 WAV clip per request (Infinity refuses any other rate), the same
   --clips distinct clips cut from ../shared/audio (payloads.py's recordings, read at 48 kHz), a closed
   loop of --clients clients (each sends its next request when its last is answered) for --duration s
   after --warmup s of the same load.
6. for each contender: clips/s, latency p50/p95/p99 (send to answer), errors; the server's CPU seconds,
   the client's (this process), and what OTHER processes took meanwhile (/proc/stat minus both, as
   bench.py records it), so a disturbed number is visible; the cosine of its embedding of clip 0 with
   transformers' (all see the same decoded PCM-16 samples). Ratios: earshot fp32 / int8 vs Infinity
   (the issue's goal: >= 3x, judged for both) and vs transformers eager.
Writes loadtest/results/clap_peers.json and clap_peers.png, and prints the markdown table.

A default run takes about 6 min on the 2-core VM (more when it is busy): the peer's install ~1 min the
first time only, checkpoint 8 s, the two exports 90-160 s, transformers ~20 s, then each server its
start (Infinity ~25 s, earshot ~15 s) + 5 s warm-up + 30 s. The smoke run above takes about 4.5 min.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import importlib.metadata
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LOADTEST = Path(__file__).resolve().parent
REPO = LOADTEST.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(LOADTEST))

from tests.models.clap_fixtures import UNFUSED_EXTRACTOR  # noqa: E402  (laion/clap-htsat-unfused's extractor config)

import bench  # noqa: E402  (loadtest/bench.py: /proc CPU accounting, percentiles, earshot serve, machine)
import launch  # noqa: E402  (loadtest/launch.py)
import payloads  # noqa: E402  (loadtest/payloads.py)

RESULTS_DIR = LOADTEST / "results"
SAMPLE_RATE = 48000  # Hz: CLAP's feature extractor rate; Infinity refuses any other rate
CLIP_SECONDS = 10.0  # CLAP's max_length_s: one window, one clip
MODEL_NAME = "clap-htsat-unfused-random"  # the bundle's name and Infinity's --served-model-name
EMBEDDING_DIM = 512
GOAL_VS_INFINITY = 3.0  # the issue: earshot >= 3x Infinity's clips/s on the same CPU

# laion/clap-htsat-unfused's config.json (audio_config) and preprocessor_config.json
HTSAT_UNFUSED_AUDIO = dict(
    depths=[2, 2, 6, 2],
    num_attention_heads=[4, 8, 16, 32],
    patch_embeds_hidden_size=96,
    hidden_size=768,
    window_size=8,
    num_mel_bins=64,
    spec_size=256,
    patch_size=4,
    patch_stride=[4, 4],
    enable_fusion=False,
    projection_dim=512,
)
ROBERTA_BASE_TEXT = dict(  # RoBERTa-base but for the vocabulary (the tokenizer's own size, set below)
    hidden_size=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    intermediate_size=3072,
    max_position_embeddings=514,
    type_vocab_size=1,
    pad_token_id=1,
    bos_token_id=0,
    eos_token_id=2,
    projection_dim=512,
)
TOKENIZER_VOCAB = 400  # byte-level BPE trained here (256 bytes + merges + specials): only audio is timed
TOKENIZER_CORPUS = (
    "This is a sound of speech.",
    "a dog barking in the rain",
    "music, a piano and a bird",
    "the sound of rain and a crow",
    "a drum kick, a bell, a car horn, people talking",
)

# The peer's environment: a working set, found on this machine (Python 3.11, no CUDA), in install order.
PEER_TORCH = "torch==2.13.0"  # first: the local CPU wheel
PEER_PACKAGES = (
    "infinity-emb[server,torch,audio]==0.0.78",  # torch: TorchAudioModel (CLAP); audio: soundfile
    "transformers==4.57.6",  # infinity's torch extra needs sentence-transformers < 4, which needs transformers < 5
    "sentence-transformers==3.4.1",
    "aiohttp==3.14.5",  # infinity resolves every audio input, data URIs too, inside an aiohttp session
    "soundfile==0.12.1",  # the audio extra's pin (< 0.13)
)
PEER_REPORTED = (
    "infinity-emb",
    "torch",
    "transformers",
    "sentence-transformers",
    "tokenizers",
    "numpy",
    "soundfile",
    "aiohttp",
    "fastapi",
    "uvicorn",
    "pydantic",
    "huggingface-hub",
)
# Infinity's defaults that matter here (infinity_emb/env.py and inference/batch_handler.py, 0.0.78)
PEER_DEFAULTS = {
    "batch_size": 32,
    "batch_delay_ms": 5.0,
    "dtype": "auto (float32 on CPU)",
    "compile": False,
    "bettertransformer": True,
    "model_warmup": True,
    "vector_disk_cache": False,
    "queue_size": 32000,
    "engine": "torch",
    "device": "cpu",
}
EARSHOT_VERSIONS = (
    "earshot",
    "earshot-export",
    "earshot-models",
    "onnxruntime",
    "onnx",
    "torch",
    "transformers",
    "numpy",
    "soundfile",
    "soxr",
    "fastapi",
    "uvicorn",
    "httpx",
    "matplotlib",
)
ISA_FLAGS = (
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "avx_vnni",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    "amx_fp16",
)
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "INFINITY_ANONYMOUS_USAGE_STATS": "0",
    "DO_NOT_TRACK": "1",
}
CONTENDERS = ("infinity", "earshot_fp32", "earshot_int8")
LABELS = {
    "infinity": "Infinity (torch engine)",
    "earshot_fp32": "earshot fp32",
    "earshot_int8": "earshot int8",
    "transformers_eager": "transformers eager, in-process (no HTTP)",
}


# -- the checkpoint ----------------------------------------------------------------------------------------
def make_checkpoint(directory: Path) -> dict:
    """A save_pretrained ClapModel (random weights, laion/clap-htsat-unfused's geometry) + ClapProcessor."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor, RobertaTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # RoBERTa's ids 0..4
    trainer = trainers.BpeTrainer(
        vocab_size=TOKENIZER_VOCAB,
        special_tokens=specials,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(list(TOKENIZER_CORPUS) * 8, trainer)
    bpe.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    tokenizer = RobertaTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
        model_max_length=512,
    )
    text = {**ROBERTA_BASE_TEXT, "vocab_size": bpe.get_vocab_size()}
    torch.manual_seed(0)
    model = ClapModel(ClapConfig(audio_config=HTSAT_UNFUSED_AUDIO, text_config=text, projection_dim=512)).eval()
    model.save_pretrained(directory)
    extractor = ClapFeatureExtractor(**UNFUSED_EXTRACTOR)
    ClapProcessor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(directory)
    extractor.save_pretrained(directory)  # preprocessor_config.json too: transformers 4.x (the peer's) reads that
    return {
        "audio_parameters": sum(p.numel() for p in model.audio_model.parameters()),
        "audio_projection_parameters": sum(p.numel() for p in model.audio_projection.parameters()),
        "text_parameters": sum(p.numel() for p in model.text_model.parameters()),
        "tokenizer_vocab": bpe.get_vocab_size(),
        "audio_config": HTSAT_UNFUSED_AUDIO,
        "text_config": text,
        "feature_extractor": UNFUSED_EXTRACTOR,
        "files": sorted(p.name for p in directory.iterdir()),
    }


# -- the clips ---------------------------------------------------------------------------------------------
def cut_clips(count: int, seconds: float = CLIP_SECONDS, rate: int = SAMPLE_RATE) -> list[np.ndarray]:
    """payloads.cut_clips at `rate`: the same recordings (payloads.read_mono at `rate`), back to back, looped,
    `count` clips each starting further along."""
    source = np.concatenate([payloads.read_mono(path, rate) for path in payloads.source_files()])
    length = int(round(seconds * rate))
    stride = max(1, len(source) // max(count, 1))
    looped = np.tile(source, 2 + length // len(source))
    return [looped[i * stride : i * stride + length].copy() for i in range(count)]


def request_bodies(waves: list[np.ndarray], rate: int = SAMPLE_RATE) -> tuple[list[bytes], list[np.ndarray], int]:
    """One JSON body per clip (the same bytes for both servers), the PCM-16 samples the servers decode
    (for the in-process baseline), and the mean WAV size."""
    import soundfile as sf

    bodies, decoded, sizes = [], [], []
    for i, wave in enumerate(waves):
        wav = payloads.encode(wave, "wav", rate)
        uri = payloads.Payload(f"clip{i}.wav", wav, payloads.MEDIA_TYPES["wav"], CLIP_SECONDS).data_uri()
        body = {"model": MODEL_NAME, "input": [uri], "modality": "audio", "encoding_format": "float"}
        bodies.append(json.dumps(body).encode())
        decoded.append(sf.read(io.BytesIO(wav), dtype="float32")[0])
        sizes.append(len(wav))
    return bodies, decoded, int(np.mean(sizes))


# -- the peer's environment and server ---------------------------------------------------------------------
def venv_versions(python: Path, names=PEER_REPORTED) -> dict[str, str | None]:
    code = (
        "import importlib.metadata as m, json, sys\n"
        "def v(n):\n    try: return m.version(n)\n    except m.PackageNotFoundError: return None\n"
        "print(json.dumps({n: v(n) for n in sys.argv[1:]} | {'python': sys.version.split()[0]}))"
    )
    done = subprocess.run([str(python), "-c", code, *names], capture_output=True, text=True, timeout=120)
    return json.loads(done.stdout) if done.returncode == 0 else {}


def pinned(requirement: str) -> tuple[str, str]:
    name, version = requirement.split("==")
    return name.split("[")[0], version


def ensure_peer_venv(venv: Path, log: Path, timeout_s: float) -> dict:
    """--peer-venv with PEER_TORCH then PEER_PACKAGES installed (created if missing); what was done."""
    python = venv / "bin" / "python"
    steps: list[dict] = []

    def run(command: list[str]) -> None:
        began = time.monotonic()
        with open(log, "a") as sink:
            sink.write(f"$ {' '.join(command)}\n")
            sink.flush()
            try:
                done = subprocess.run(command, stdout=sink, stderr=subprocess.STDOUT, timeout=timeout_s)
            except subprocess.TimeoutExpired:
                raise RuntimeError(f"{' '.join(command)}: over {timeout_s:.0f} s; log {log}") from None
        steps.append({"command": " ".join(command), "seconds": round(time.monotonic() - began, 1)})
        if done.returncode != 0:
            tail = log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{' '.join(command)} exited with {done.returncode}; log tail:\n{tail}")

    if not python.exists():
        run([sys.executable, "-m", "venv", str(venv)])
    have = venv_versions(python)
    wanted = dict(pinned(r) for r in (PEER_TORCH, *PEER_PACKAGES))
    if any(not (have.get(name) or "").startswith(version) for name, version in wanted.items()):
        pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check"]
        run([*pip, PEER_TORCH])
        run([*pip, *PEER_PACKAGES])
        have = venv_versions(python)
    freeze = subprocess.run([str(python), "-m", "pip", "freeze"], capture_output=True, text=True, timeout=120)
    return {
        "venv": str(venv),
        "install_steps": steps,
        "installed_now": bool(steps),
        "install_commands": [
            f"{venv}/bin/pip install {PEER_TORCH}",
            f"{venv}/bin/pip install " + " ".join(f"'{p}'" for p in PEER_PACKAGES),
        ],
        "versions": have,
        "freeze": freeze.stdout.split(),
    }


def start_peer(venv: Path, checkpoint: Path, threads: int, log: Path, ready_timeout_s: float) -> launch.Server:
    """`infinity_emb v2` on 127.0.0.1 and a free port, returned once /models lists the model."""
    import httpx

    port = launch.free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(
        OFFLINE_ENV,
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        COLUMNS="200",
        PATH=f"{venv / 'bin'}:{env.get('PATH', '')}",
    )
    argv = [
        str(venv / "bin" / "infinity_emb"),
        "v2",
        "--model-id",
        str(checkpoint),
        "--served-model-name",
        MODEL_NAME,
        "--engine",
        "torch",
        "--device",
        "cpu",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    with open(log, "wb") as sink:
        process = subprocess.Popen(argv, env=env, stdout=sink, stderr=subprocess.STDOUT, cwd=log.parent)
    server = launch.Server(process, f"http://127.0.0.1:{port}", log, port, env)
    deadline = time.monotonic() + ready_timeout_s
    try:
        with httpx.Client(timeout=5, trust_env=False) as client:
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"infinity_emb exited with {process.returncode}; log tail:\n{server.tail()}")
                with contextlib.suppress(httpx.TransportError, ValueError):
                    answer = client.get(server.url + "/models")
                    if answer.status_code == 200 and MODEL_NAME in answer.text:
                        return server
                if time.monotonic() > deadline:
                    raise RuntimeError(f"infinity_emb not ready within {ready_timeout_s} s; log tail:\n{server.tail()}")
                time.sleep(0.5)
    except BaseException:
        server.kill()
        raise


# -- CPU accounting ----------------------------------------------------------------------------------------
def tree_cpu_s(pid: int) -> float:
    """bench.process_cpu_s of a process and its live descendants."""
    children: dict[int, list[int]] = collections.defaultdict(list)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            children[int(stat.read_text().rsplit(")", 1)[1].split()[1])].append(int(stat.parent.name))
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        with contextlib.suppress(OSError):
            total += bench.process_cpu_s(current)
        todo += children.get(current, [])
    return total


# -- the load ----------------------------------------------------------------------------------------------
@dataclass
class Record:
    clip: int
    sent: float
    done: float
    status: int  # HTTP status; 0 transport error; -1 a 200 with the wrong answer
    error: str | None = None

    @property
    def latency_s(self) -> float:
        return self.done - self.sent


async def _post(client, url: str, body: bytes, clip: int, first: dict[int, list[float]]) -> Record:
    import httpx

    sent = time.monotonic()
    try:
        response = await client.post(url, content=body, headers={"content-type": "application/json"})
        status, error = response.status_code, None
        if status == 200:
            data = response.json().get("data", [])
            if len(data) != 1 or len(data[0].get("embedding", [])) != EMBEDDING_DIM:
                status, error = -1, f"expected 1 embedding of {EMBEDDING_DIM}: {response.text[:200]}"
            else:
                first.setdefault(clip, data[0]["embedding"])
        else:
            error = f"{status}: {response.text[:300]}"
    except httpx.HTTPError as failure:
        status, error = 0, f"{type(failure).__name__}: {failure}"[:300]
    return Record(clip, sent, time.monotonic(), status, error)


async def closed_loop(
    url: str, bodies: list[bytes], clients: int, duration_s: float, timeout_s: float, first: dict[int, list[float]]
) -> tuple[list[Record], float]:
    """`clients` clients, each sending its next clip when its last is answered, until duration_s is up
    (requests in flight then are waited for and counted); the records and the wall time."""
    import httpx

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(timeout_s), trust_env=False) as client:
        start = time.monotonic()
        stop = start + duration_s
        records: list[Record] = []

        async def user(offset: int) -> None:
            index = offset
            while time.monotonic() < stop:
                clip = index % len(bodies)
                records.append(await _post(client, url, bodies[clip], clip, first))
                index += clients

        await asyncio.gather(*(user(i) for i in range(clients)))
    return records, max((r.done for r in records), default=start) - start


def summarize(records: list[Record], wall_s: float) -> dict:
    ok = [r for r in records if r.status == 200]
    errors = collections.Counter(r.error for r in records if r.status != 200)
    return {
        "requests": len(records),
        "ok": len(ok),
        "errors": len(records) - len(ok),
        "statuses": dict(collections.Counter(str(r.status) for r in records)),
        "error_samples": [f"{n}x {message}" for message, n in errors.most_common(3)],
        "wall_s": wall_s,
        "clips_per_s": len(ok) / wall_s if wall_s > 0 else 0.0,
        "latency_ms": {
            k: None if v is None else v * 1000 for k, v in bench.percentiles([r.latency_s for r in ok]).items()
        },
    }


def measure(server: launch.Server, path: str, bodies: list[bytes], args) -> tuple[dict, list[float] | None]:
    """Warm-up, then the timed closed loop with the machine's CPU accounted; the summary and the
    server's embedding of clip 0."""
    url = server.url + path
    first: dict[int, list[float]] = {}
    warm, _ = asyncio.run(closed_loop(url, bodies, args.clients, args.warmup, args.request_timeout, first))
    before_server, before_self, before_machine = tree_cpu_s(server.pid), time.process_time(), bench.machine_busy_cpu_s()
    records, wall = asyncio.run(closed_loop(url, bodies, args.clients, args.duration, args.request_timeout, first))
    server_cpu = tree_cpu_s(server.pid) - before_server
    client_cpu = time.process_time() - before_self
    others = bench.machine_busy_cpu_s() - before_machine - server_cpu - client_cpu
    summary = summarize(records, wall)
    summary.update(
        warmup_requests=len(warm),
        warmup_ok=sum(r.status == 200 for r in warm),
        server_cpu_s=server_cpu,
        server_cpu_cores=server_cpu / wall if wall > 0 else 0.0,
        client_cpu_s=client_cpu,
        other_processes_cpu_cores=max(0.0, others) / wall if wall > 0 else 0.0,
        loadavg_1min_after=os.getloadavg()[0],
    )
    return summary, first.get(0)


# -- the in-process baseline -------------------------------------------------------------------------------
def transformers_eager(
    checkpoint: Path, decoded: list[np.ndarray], batch: int, threads: int, passes: int = 2
) -> tuple[dict, np.ndarray]:
    """ClapProcessor's feature extractor + ClapModel.get_audio_features, batches of `batch`; best pass."""
    import torch
    from transformers import ClapModel, ClapProcessor

    torch.set_num_threads(threads)
    extractor = ClapProcessor.from_pretrained(checkpoint).feature_extractor
    model = ClapModel.from_pretrained(checkpoint).eval()
    batches = [decoded[i : i + batch] for i in range(0, len(decoded), batch)]

    def run(clips: list[np.ndarray]) -> np.ndarray:
        features = extractor(clips, sampling_rate=SAMPLE_RATE, return_tensors="pt")
        with torch.inference_mode():
            out = model.get_audio_features(input_features=features["input_features"])
        embeds = getattr(out, "pooler_output", out)  # (B, 512): transformers 5 returns an output object
        return torch.nn.functional.normalize(embeds, dim=-1).numpy()

    clip0 = run(batches[0])[0]  # warm-up
    rates = []
    before_self, before_machine, began = time.process_time(), bench.machine_busy_cpu_s(), time.perf_counter()
    for _ in range(passes):
        start = time.perf_counter()
        for clips in batches:
            run(clips)
        rates.append(len(decoded) / (time.perf_counter() - start))
    wall = time.perf_counter() - began
    others = bench.machine_busy_cpu_s() - before_machine - (time.process_time() - before_self)
    row = {
        "clips_per_s": max(rates),
        "passes_clips_per_s": rates,
        "batch": batch,
        "threads": threads,
        "clips": len(decoded),
        "other_processes_cpu_cores": max(0.0, others) / wall,
    }
    return row, clip0


def cosine(a, b) -> float | None:
    if a is None or b is None:
        return None
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# -- the machine -------------------------------------------------------------------------------------------
def cpu_flags(cpuinfo: str) -> dict:
    """ISA_FLAGS from /proc/cpuinfo's first "flags" line: which are present, and which are not."""
    line = next((line for line in cpuinfo.splitlines() if line.startswith("flags")), "")
    flags = set(line.split(":", 1)[1].split()) if ":" in line else set()
    return {"present": [f for f in ISA_FLAGS if f in flags], "absent": [f for f in ISA_FLAGS if f not in flags]}


def machine_info() -> dict:
    info = bench.machine()
    cpuinfo = Path("/proc/cpuinfo").read_text()
    info["isa_flags"] = cpu_flags(cpuinfo)
    info["logical_cpus_in_cpuinfo"] = cpuinfo.count("processor\t:")
    with contextlib.suppress(OSError, StopIteration, ValueError):
        kb = next(line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
        info["memory_gib"] = round(int(kb.split()[1]) / 2**20, 1)
    versions = {}
    for name in EARSHOT_VERSIONS:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[name] = importlib.metadata.version(name)
    info["versions"] = versions
    return info


# -- the report --------------------------------------------------------------------------------------------
def ratios(report: dict) -> dict:
    rate = {name: row.get("clips_per_s") for name, row in report["contenders"].items()}
    eager = report.get("transformers_eager", {}).get("clips_per_s")
    out: dict = {}
    for name in ("earshot_fp32", "earshot_int8"):
        out[f"{name}_vs_infinity"] = rate[name] / rate["infinity"] if rate.get(name) and rate.get("infinity") else None
    for name in CONTENDERS:
        out[f"{name}_vs_transformers_eager"] = rate[name] / eager if rate.get(name) and eager else None
    return out


def goals(values: dict) -> dict:
    return {
        name: {"goal": f">= {GOAL_VS_INFINITY}", "met": value >= GOAL_VS_INFINITY}
        for name, value in values.items()
        if name.endswith("_vs_infinity") and value is not None
    }


def markdown(report: dict) -> str:
    """The table of a result file."""

    def number(value, digits: int = 2) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    settings, machine = report["settings"], report["machine"]
    peer = report.get("peer", {})
    versions = peer.get("versions", {})
    lines = [
        f"CLAP HTS-AT in laion/clap-htsat-unfused's geometry (random weights); {settings['clips']} distinct "
        f"{settings['clip_seconds']:g} s clips, 48 kHz mono PCM-16 WAV as base64 data URIs, one per request; "
        f"closed loop of {settings['clients']} clients, {settings['duration_s']:g} s after {settings['warmup_s']:g} s "
        f"warm-up; {settings['threads']} threads each. CPU `{machine['cpu_model']}`, {machine['cpu_count']} cores, "
        f"flags {', '.join(machine['isa_flags']['present'])}; Infinity {versions.get('infinity-emb', '?')} "
        f"(torch {versions.get('torch', '?')}, transformers {versions.get('transformers', '?')}, "
        f"batch size {report.get('peer_settings', {}).get('batch_size', '?')}), earshot onnxruntime "
        f"{machine['versions'].get('onnxruntime', '?')}.",
        "",
        "| contender | clips/s | vs Infinity | p50 ms | p99 ms | ok/sent | errors | server CPU cores | client CPU s "
        "| other procs' cores | cosine vs transformers |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    base = report["contenders"].get("infinity", {}).get("clips_per_s")
    for name in CONTENDERS:
        row = report["contenders"].get(name, {})
        if "error" in row:
            lines.append(f"| {LABELS[name]} | **failed**: {row['error'].splitlines()[0][:160]} |" + " |" * 9)
            continue
        if not row:
            lines.append(f"| {LABELS[name]} | not run |" + " |" * 9)
            continue
        lat = row["latency_ms"]
        vs = number(row["clips_per_s"] / base) if base else "-"
        lines.append(
            f"| {LABELS[name]} | {number(row['clips_per_s'])} | {vs} | {number(lat['p50'], 0)} | {number(lat['p99'], 0)} "
            f"| {row['ok']}/{row['requests']} | {row['errors']} | {number(row['server_cpu_cores'])} "
            f"| {number(row['client_cpu_s'], 1)} | {number(row['other_processes_cpu_cores'])} "
            f"| {number(row.get('cosine_vs_transformers'), 4)} |"
        )
    eager = report.get("transformers_eager", {})
    if "clips_per_s" in eager:
        vs = number(eager["clips_per_s"] / base) if base else "-"
        lines.append(
            f"| {LABELS['transformers_eager']}, batch {eager['batch']} | {number(eager['clips_per_s'])} | {vs} "
            f"| - | - | - | - | - | - | {number(eager['other_processes_cpu_cores'])} | (reference) |"
        )
    lines += ["", "| ratio | value | goal |", "|---|---|---|"]
    for name, value in report["ratios"].items():
        goal = report["goals"].get(name)
        verdict = f"{goal['goal']}: {'met' if goal['met'] else '**missed**'}" if goal else "(context)"
        lines.append(f"| {name} | {number(value)} | {verdict} |")
    return "\n".join(lines)


def plot(report: dict, path: Path) -> str | None:
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed: no plot", flush=True)
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {
        "infinity": "#888888",
        "earshot_fp32": "#1f77b4",
        "earshot_int8": "#2ca02c",
        "transformers_eager": "#cccccc",
    }
    rows = [(n, report["contenders"][n]) for n in CONTENDERS if "clips_per_s" in report["contenders"].get(n, {})]
    eager = report.get("transformers_eager", {})
    if "clips_per_s" in eager:
        rows_and_eager = [*rows, ("transformers_eager", eager)]
    else:
        rows_and_eager = rows

    def label(name: str, row: dict) -> str:  # what the other processes took meanwhile, under each bar
        short = "transformers eager\n(in-process)" if name == "transformers_eager" else LABELS[name].split(" (")[0]
        return f"{short}\nothers {row['other_processes_cpu_cores']:.2f} cores"

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.4))
    names = [label(name, row) for name, row in rows_and_eager]
    rates = [row["clips_per_s"] for _, row in rows_and_eager]
    bars = left.bar(names, rates, color=[colors[name] for name, _ in rows_and_eager])
    for bar, value in zip(bars, rates, strict=True):
        left.annotate(f"{value:.2f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom")
    left.set(ylabel="clips/s (10 s clips)", title=f"throughput, {report['settings']['clients']} clients")
    left.tick_params(axis="x", labelsize=8)
    x = np.arange(len(rows))
    for k, quantile in enumerate(("p50", "p99")):
        right.bar(x + (k - 0.5) * 0.38, [row["latency_ms"][quantile] or 0 for _, row in rows], 0.38, label=quantile)
    right.set_xticks(x, [label(name, row) for name, row in rows], fontsize=8)
    right.set(ylabel="latency (ms, send to answer)", title="latency")
    right.legend()
    fig.suptitle(
        f"CLAP HTS-AT (clap-htsat-unfused shapes), {report['machine']['cpu_model']}, "
        f"{report['machine']['cpu_count']} cores",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


# -- the run -----------------------------------------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=4, help="closed-loop clients, one request in flight each")
    parser.add_argument("--duration", type=float, default=30.0, help="timed seconds per contender")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of the same load before timing")
    parser.add_argument("--clips", type=int, default=16, help="distinct 10 s clips")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (Infinity, transformers), ORT intra-op")
    parser.add_argument("--batch", type=int, default=4, help="batch of the in-process transformers baseline")
    parser.add_argument("--peer-venv", type=Path, default=Path("/work/infinity-venv"))
    parser.add_argument("--skip-peer", action="store_true", help="no Infinity: earshot + transformers only")
    parser.add_argument("--install-timeout", type=float, default=1200.0, help="seconds per pip command")
    parser.add_argument("--ready-timeout", type=float, default=300.0, help="seconds for a server to be ready")
    parser.add_argument("--request-timeout", type=float, default=120.0)
    parser.add_argument("--no-plot", dest="plots", action="store_false")
    parser.add_argument("--markdown", type=Path, metavar="RESULT.json", help="print the table of a result and exit")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "clap_peers.json")
    parser.add_argument("--serve-setting", action="append", default=[], metavar="KEY=VALUE",
                        help="an `earshot serve` flag for both earshot contenders, e.g. runner_threads=2 (repeatable)")
    parser.add_argument("--work", type=Path, help="keep the checkpoint and bundles here and reuse them on the next run")
    return parser.parse_args(argv)


def run_peer(args, work: Path, checkpoint: Path, bodies: list[bytes], report: dict) -> tuple[dict, list[float] | None]:
    """Infinity started, warmed up, timed and stopped; its summary and its embedding of clip 0."""
    report["peer_settings"] = {
        **PEER_DEFAULTS,
        "torch_threads": args.threads,
        "env": {**OFFLINE_ENV, "OMP_NUM_THREADS": str(args.threads)},
    }
    began = time.monotonic()
    server = start_peer(args.peer_venv, checkpoint, args.threads, work / "infinity.log", args.ready_timeout)
    try:
        report["peer_settings"]["ready_s"] = round(time.monotonic() - began, 1)
        return measure(server, "/embeddings", bodies, args)
    finally:
        server.stop(30)


def run_earshot(args, work: Path, path: Path, precision: str, bodies: list[bytes]) -> tuple[dict, list[float] | None]:
    """`earshot serve --bundle path --threads T` started (ready), warmed up, timed and stopped."""
    log = work / f"earshot-{precision}.log"
    with bench.running_server(path, log, {"threads": args.threads, **serve_settings(args)}) as server:
        return measure(server, "/v1/embeddings", bodies, args)


def serve_settings(args) -> dict[str, str]:
    """--serve-setting KEY=VALUE pairs: `earshot serve` flags for both earshot contenders."""
    pairs = [item.split("=", 1) for item in args.serve_setting]
    if any(len(pair) != 2 for pair in pairs):
        raise SystemExit("--serve-setting takes KEY=VALUE")
    return {key: value for key, value in pairs}


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.markdown is not None:
        print(markdown(json.loads(args.markdown.read_text())))
        return {}
    started = time.time()
    report: dict = {
        "benchmark": "CLAP HTS-AT (laion/clap-htsat-unfused geometry, random weights): Infinity vs earshot fp32 / "
        "int8 over HTTP, same checkpoint, same clips, same closed-loop clients; transformers eager for context",
        "command": "python loadtest/bench_clap_peers.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine_info(),
        "code": bench.code_version(),
        "settings": {
            "clients": args.clients,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "clips": args.clips,
            "clip_seconds": CLIP_SECONDS,
            "sample_rate": SAMPLE_RATE,
            "threads": args.threads,
            "request": "one clip per request, JSON with a base64 WAV data URI",
            "earshot_serve_flags": {"threads": args.threads, **serve_settings(args)},
        },
        "gpu": "not measured (CPU only)",
        "contenders": {},
        "phases_s": {},
    }

    def phase(name: str, since: float) -> None:
        report["phases_s"][name] = round(time.time() - since, 1)

    with contextlib.ExitStack() as stack:
        if args.work is None:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="clap-peers-")))
        else:
            work = args.work
            work.mkdir(parents=True, exist_ok=True)
        checkpoint = work / "clap-htsat-unfused-random"
        began = time.time()
        made = work / "checkpoint.json"
        if made.exists():  # --work: the checkpoint of an earlier run
            report["checkpoint"] = json.loads(made.read_text())
        else:
            report["checkpoint"] = make_checkpoint(checkpoint)
            made.write_text(json.dumps(report["checkpoint"]))
        phase("checkpoint", began)
        began = time.time()
        waves = cut_clips(args.clips)
        bodies, decoded, wav_bytes = request_bodies(waves)
        report["settings"].update(wav_bytes_mean=wav_bytes, body_bytes_mean=int(np.mean([len(b) for b in bodies])))
        phase("clips", began)

        if not args.skip_peer:  # installed before anything is timed
            began = time.time()
            try:
                report["peer"] = ensure_peer_venv(args.peer_venv, work / "peer-install.log", args.install_timeout)
            except Exception as error:  # reported; the earshot half still runs
                report["contenders"]["infinity"] = {"error": f"install: {error}"}
                print(f"infinity: install failed: {error}", flush=True)
            phase("peer_install", began)
            print(f"peer: {report.get('peer', {}).get('versions')}", flush=True)

        from earshot_export.loaders.clap import load_clap
        from earshot_export.onnx_export import export_bundle

        began = time.time()
        exportable = load_clap(str(checkpoint), name=MODEL_NAME)
        bundles = {}
        for precision in ("fp32", "int8"):
            path = work / f"bundle-{precision}"
            if (path / "manifest.json").exists():  # --work: exported by an earlier run
                from earshot import bundle as bundle_format

                built = bundle_format.load(path)
            else:
                built = export_bundle(exportable, path, precision, parity_audio=decoded[:2])
            bundles[precision] = path
            report.setdefault("bundles", {})[precision] = {
                "model_bytes": (path / "model.onnx").stat().st_size,
                "parity": built.manifest.parity,
                "fused_operators": built.manifest.notes.get("fused_operators"),
                "window_samples": built.manifest.window_samples,
                "sample_rate": built.manifest.sample_rate,
                "name": built.manifest.name,
            }
        del exportable
        phase("export", began)

        began = time.time()
        report["transformers_eager"], reference = transformers_eager(checkpoint, decoded, args.batch, args.threads)
        phase("transformers_eager", began)
        print(f"transformers eager: {report['transformers_eager']['clips_per_s']:.2f} clips/s", flush=True)

        runs = [
            ("earshot_fp32", lambda: run_earshot(args, work, bundles["fp32"], "fp32", bodies)),
            ("earshot_int8", lambda: run_earshot(args, work, bundles["int8"], "int8", bodies)),
        ]
        if not args.skip_peer and "infinity" not in report["contenders"]:
            runs.insert(0, ("infinity", lambda: run_peer(args, work, checkpoint, bodies, report)))
        for name, run in runs:
            began = time.time()
            try:
                summary, clip0 = run()
                summary["cosine_vs_transformers"] = cosine(clip0, reference)
            except Exception as error:  # reported; the other contenders still run
                summary = {"error": str(error)}
                print(f"{name}: failed: {error}", flush=True)
            report["contenders"][name] = summary
            phase(name, began)
        for name in CONTENDERS:
            row = report["contenders"].get(name, {})
            if "clips_per_s" in row:
                print(
                    f"{name}: {row['clips_per_s']:.2f} clips/s, p50 {row['latency_ms']['p50'] or 0:.0f} ms, "
                    f"p99 {row['latency_ms']['p99'] or 0:.0f} ms, errors {row['errors']}, "
                    f"other procs {row['other_processes_cpu_cores']:.2f} cores",
                    flush=True,
                )

    report["ratios"] = ratios(report)
    report["goals"] = goals(report["ratios"])
    report["machine"]["loadavg_end"] = os.getloadavg()
    report["wall_s"] = time.time() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.plots:
        report["plot"] = plot(report, args.out.with_suffix(".png"))
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}\n")
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
