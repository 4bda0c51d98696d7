"""The bundle self-test: a probe made at export, checked by every runner before it serves.

A bundle's `probe.npz` holds a few windows of deterministic audio and the outputs the graph must
give for them, computed at export with the reference arithmetic (int8.py: Q/DQ as float, integer
MatMuls summed exactly; fp32 and fp16 as the graph's own float arithmetic on the CPU). A runner
runs the probe on the provider and kernels it chose; where a window's embedding or logits are
further than the manifest's tolerance (cosine) from the expected ones, the model does not serve:
`open_runner` raises SelfTestFailed (or, when asked, falls back to the reference arithmetic on the
CPU and says so). The HTTP engine, the catalog job and the Ray actors all open runners here.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from earshot import bundle as bundle_format
from earshot.engine import int8
from earshot.engine.runner import Runner, RunnerConfig, open_session

log = logging.getLogger(__name__)

PROBE_WINDOWS = 3
PCM16_FULL_SCALE = 32768.0  # probe audio is stored as 16-bit PCM: exactly representable in float32
# Per-window cosine between what the runner gives and the reference outputs. fp32: float
# arithmetic in another order (measured 1 - 1e-7). fp16: the same float16 graph on another kernel.
# int8 with dynamic quantisation: exact integer MatMuls vs float64 ones; what differs is float
# rounding in the float ops around them (measured 0.99995 on AST). int8 QDQ (YAMNet): integer
# requantisation vs float Q/DQ flips single uint8 steps, which the quantised net amplifies (see
# the YAMNet build for its measured values); a saturating kernel lands far below.
TOLERANCES = {"fp32": 0.9999, "fp16": 0.999, "int8": 0.999}
ON_FAILURE = ("refuse", "fallback")


class SelfTestFailed(Exception):
    """A runner whose outputs on the bundle's probe are not the ones the bundle says it must give."""

    def __init__(self, result: SelfTestResult) -> None:
        super().__init__(result.message)
        self.result = result


@dataclass(frozen=True)
class Probe:
    waveform: np.ndarray  # (windows, input_samples) float32
    num_samples: np.ndarray  # (windows,) int64
    embedding: np.ndarray  # (windows, embedding_dim) float32
    logits: np.ndarray | None  # (windows, num_labels) float32


@dataclass(frozen=True)
class SelfTestResult:
    model: str
    status: str  # "passed", "failed", "fallback" (failed on the fast path, passed on the reference one), "no_probe"
    provider: str  # the execution provider the probe ran on
    arithmetic: str  # what the runner computes with (Runner.arithmetic)
    min_embedding_cosine: float | None
    min_logits_cosine: float | None
    tolerance: float | None
    message: str

    @property
    def passed(self) -> bool:
        return self.status in ("passed", "fallback", "no_probe")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# -- making the probe (at export) --------------------------------------------------------------------
def probe_audio(window_samples: int, context: bundle_format.Context, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic probe windows: (waveform (3, input_samples) float32, num_samples (3,) int64).

    A loud log sweep with a noise floor, a harmonic tone with tremolo near full scale (what makes a
    saturating integer kernel show), and noise bursts that end inside the window (the padding path).
    Written from closed-form signals and a fixed-seed generator once, then stored: nothing is
    regenerated at load time.
    """
    rng = np.random.default_rng(20261201)
    input_samples = context.before + window_samples + context.after
    t = np.arange(input_samples) / sample_rate
    duration = input_samples / sample_rate
    low, high = 50.0, 0.45 * sample_rate
    sweep_phase = 2 * np.pi * low * duration / np.log(high / low) * (np.exp(t / duration * np.log(high / low)) - 1)
    sweep = 0.6 * np.sin(sweep_phase) + 0.01 * rng.standard_normal(input_samples)
    tone = sum(0.9 / k * np.sin(2 * np.pi * 220.0 * k * t + k) for k in range(1, 8)) / 2.6
    tone = tone * (0.75 + 0.25 * np.sin(2 * np.pi * 5.0 * t)) + 0.003 * rng.standard_normal(input_samples)
    bursts = 0.4 * rng.standard_normal(input_samples) * (np.sin(2 * np.pi * 3.0 * t) > 0.3)
    real = int(window_samples * 0.6)  # the third window ends inside: zero-padded as the engine pads
    bursts[context.before + real :] = 0.0  # (and its context after it)
    waveform = np.stack([sweep, tone, bursts])  # (3, input_samples)
    pcm = np.clip(np.round(waveform * PCM16_FULL_SCALE), -32768, 32767)
    num_samples = np.array([window_samples, window_samples, real], dtype=np.int64)
    return (pcm / PCM16_FULL_SCALE).astype(np.float32), num_samples


def reference_outputs(model_path: Path, precision: str, waveform: np.ndarray, num_samples: np.ndarray):
    """(embedding, logits or None) of the graph at `model_path` in its reference arithmetic on the CPU."""
    session, _ = open_session(model_path, precision, providers=["CPUExecutionProvider"], arithmetic="reference")
    names = [output.name for output in session.get_outputs()]
    feeds = {bundle_format.WAVEFORM_INPUT: waveform, bundle_format.NUM_SAMPLES_INPUT: num_samples}
    outputs = dict(zip(names, session.run(None, {i.name: feeds[i.name] for i in session.get_inputs()}), strict=True))
    return outputs[bundle_format.EMBEDDING_OUTPUT], outputs.get(bundle_format.LOGITS_OUTPUT)


def write_probe(
    directory: Path,
    model_path: Path,
    precision: str,
    window_samples: int,
    context: bundle_format.Context,
    sample_rate: int,
    tolerance: float | None = None,
) -> dict[str, Any]:
    """Write `probe.npz` into the bundle directory; returns the manifest's `probe` entry."""
    waveform, num_samples = probe_audio(window_samples, context, sample_rate)
    embedding, logits = reference_outputs(model_path, precision, waveform, num_samples)
    arrays = {"waveform_pcm16": np.round(waveform * PCM16_FULL_SCALE).astype(np.int16), "num_samples": num_samples,
              "embedding": embedding.astype(np.float32)}
    if logits is not None:
        arrays["logits"] = logits.astype(np.float32)
    with open(directory / bundle_format.PROBE_FILE, "wb") as handle:
        np.savez_compressed(handle, **arrays)
    # what the fast kernels of the export machine give, for the record (never what a runner is held to)
    session, arithmetic = open_session(model_path, precision, providers=["CPUExecutionProvider"], arithmetic="fast")
    feeds = {bundle_format.WAVEFORM_INPUT: waveform, bundle_format.NUM_SAMPLES_INPUT: num_samples}
    fast = session.run([bundle_format.EMBEDDING_OUTPUT], {i.name: feeds[i.name] for i in session.get_inputs()})[0]
    return {
        "file": bundle_format.PROBE_FILE,
        "windows": len(waveform),
        "tolerance": {"min_cosine": TOLERANCES[precision] if tolerance is None else tolerance},
        "reference": REFERENCE_DESCRIPTION[precision],
        "export_machine": {
            "cpu": int8.cpu_description(),
            "arithmetic": arithmetic,
            "min_embedding_cosine": float(cosine_rows(fast, embedding).min()),
        },
    }


REFERENCE_DESCRIPTION = {
    "fp32": "the float32 graph on ONNX Runtime's CPU provider",
    "fp16": "the float16 graph on ONNX Runtime's CPU provider",
    "int8": "exact integer semantics: QuantizeLinear/DequantizeLinear as float arithmetic, MatMulInteger summed "
    "in float64 (exact), QAttention as float Attention on the dequantised input and weights (int8.reference_model)",
}


def read_probe(bundle: bundle_format.Bundle) -> Probe | None:
    entry = bundle.manifest.probe
    if not entry:
        return None
    try:
        with np.load(bundle.path / entry["file"]) as arrays:
            return Probe(
                waveform=(arrays["waveform_pcm16"].astype(np.float32) / PCM16_FULL_SCALE),
                num_samples=arrays["num_samples"].astype(np.int64),
                embedding=arrays["embedding"],
                logits=arrays["logits"] if "logits" in arrays.files else None,
            )
    except (OSError, KeyError, ValueError) as error:
        raise bundle_format.BundleError(f"{bundle.path}: unreadable probe {entry.get('file')!r}: {error}") from error


# -- checking it (at load) ---------------------------------------------------------------------------
def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-row cosine of (rows, dim) arrays, in float64; two all-zero rows count as equal."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    norms = np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1)
    both_zero = (np.abs(a64).max(axis=1) == 0) & (np.abs(b64).max(axis=1) == 0)
    cosine = (a64 * b64).sum(axis=1) / np.maximum(norms, 1e-30)
    return np.where(both_zero, 1.0, cosine)


def run_self_test(runner: Runner) -> SelfTestResult:
    name = runner.bundle.name
    provider = runner.providers[0] if runner.providers else "none"
    probe = read_probe(runner.bundle)
    if probe is None:
        message = f"model {name}: bundle has no self-test probe (made before probes existed); serving it unchecked"
        return SelfTestResult(name, "no_probe", provider, runner.arithmetic, None, None, None, message)
    tolerance = float(runner.bundle.manifest.probe["tolerance"]["min_cosine"])
    got = runner.run(probe.waveform, probe.num_samples)
    min_embedding = float(cosine_rows(got.embedding, probe.embedding).min())
    min_logits = None
    if probe.logits is not None and got.logits is not None:
        min_logits = float(cosine_rows(got.logits, probe.logits).min())
    worst = min(min_embedding, min_logits if min_logits is not None else 1.0)
    passed = worst >= tolerance and np.isfinite(worst)
    logits_text = "" if min_logits is None else f", logits cosine {min_logits:.6f}"
    message = (
        f"model {name} on {provider} ({runner.arithmetic}): self-test {'passed' if passed else 'FAILED'}: "
        f"{len(probe.waveform)} probe windows, min embedding cosine {min_embedding:.6f}{logits_text} "
        f"to the bundle's reference outputs; tolerance {tolerance}"
    )
    return SelfTestResult(name, "passed" if passed else "failed", provider, runner.arithmetic, min_embedding,
                          min_logits, tolerance, message)


def open_runner(bundle: bundle_format.Bundle, config: RunnerConfig, on_failure: str = "refuse") -> tuple[Runner, SelfTestResult]:
    """Open, warm up and self-test a runner for `bundle`.

    on_failure "refuse": raise SelfTestFailed. "fallback": try the reference arithmetic on the CPU
    (slower, the bundle's exact meaning), serve that if it passes, and say so.
    """
    if on_failure not in ON_FAILURE:
        raise ValueError(f"on_failure must be one of {ON_FAILURE}, got {on_failure!r}")
    runner = Runner(bundle, config)
    runner.warm_up()
    result = run_self_test(runner)
    if result.status == "no_probe":
        log.warning(result.message)
        return runner, result
    if result.passed:
        log.info(result.message)
        return runner, result
    log.error(result.message)
    if on_failure == "refuse" or config.arithmetic == "reference":
        raise SelfTestFailed(result)
    fallback = Runner(bundle, replace(config, providers=("cpu",), arithmetic="reference"))
    fallback.warm_up()
    second = run_self_test(fallback)
    if not second.passed:
        log.error(second.message)
        raise SelfTestFailed(replace(second, message=f"{result.message}; fallback: {second.message}"))
    message = f"{result.message}; serving with the fallback instead: {second.message}"
    log.warning(message)
    return fallback, replace(second, status="fallback", message=message)
