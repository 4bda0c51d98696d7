"""Parity of an exported graph against the PyTorch model it came from, on real audio windows.

Tolerances (the export fails outside them):
- fp32: logits within 1e-4 absolute (zero-shot heads, a scaled cosine: 1e-5 times their scale);
  embedding cosine >= 0.99999
- fp16, int8: embedding cosine >= 0.99 on every window, and the same top-1 tag on every window
  where the reference's top two logits are at least TOP1_DECISIVE_MARGIN apart
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from earshot.engine.self_test import cosine_rows


def machine_description() -> dict:
    import onnxruntime

    from earshot.engine.int8 import cpu_description

    return {"cpu": cpu_description(), "onnxruntime": onnxruntime.__version__}


FP32_LOGITS_ATOL = 1e-4
# zero-shot logits are logit_scale * cosine (CLAP: 30-100 times a cosine): their fp32 bound is a
# cosine's, times the scale (float32 through a deep random-weight HTS-AT moves a cosine by ~6e-6)
COSINE_ATOL = 1e-5
FP32_MIN_COSINE = 0.99999
REDUCED_MIN_COSINE = 0.99
# top-1 must agree where the reference's choice is decisive: windows whose best two logits are
# closer than this are a coin toss that any rounding may flip (random-weight models have many)
TOP1_DECISIVE_MARGIN = 1e-2


class ParityError(Exception):
    def __init__(self, report: ParityReport | TextParityReport):
        super().__init__(f"exported graph fails parity: {report.summary()}")
        self.report = report


@dataclass
class ParityReport:
    precision: str
    windows: int
    min_embedding_cosine: float
    max_embedding_abs_diff: float
    max_logits_abs_diff: float | None
    top1_agreement: float | None  # over the windows where the reference's top-1 is decisive
    top1_compared_windows: int | None = None
    min_frames_cosine: float | None = None  # models with frame features: over every frame of every window
    tolerances: dict[str, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    reference: str = "PyTorch (float32, CPU) vs ONNX Runtime (CPUExecutionProvider)"
    # the machine this report was measured on: its fast kernels are not every machine's (int8.py);
    # what every runner is held to is the bundle's probe, checked at load
    machine: dict = field(default_factory=machine_description)

    @property
    def passed(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        verdict = "passed" if self.passed else "FAILED (" + "; ".join(self.failures) + ")"
        logits = "n/a" if self.max_logits_abs_diff is None else f"{self.max_logits_abs_diff:.3g}"
        return (
            f"{self.precision} on {self.windows} windows: min embedding cosine {self.min_embedding_cosine:.6f}, "
            f"max |logits diff| {logits}, top-1 agreement {self.top1_agreement}: {verdict}"
        )

    def to_json(self) -> dict:
        return {**asdict(self), "passed": self.passed}


def parity_windows(
    clips: list[np.ndarray] | None, window_samples: int, sample_rate: int
) -> tuple[np.ndarray, np.ndarray]:
    """The first window of each clip, zero-padded as the engine pads: (waveforms [N, W], num_samples [N]).

    Without clips (a user exporting on a machine with no audio at hand), deterministic synthetic
    signals stand in: a chirp, a harmonic tone, noise, and a click train shorter than one window.
    """
    if not clips:
        clips = synthetic_clips(window_samples, sample_rate)
    waveforms = np.zeros((len(clips), window_samples), dtype=np.float32)  # (N, W)
    num_samples = np.zeros(len(clips), dtype=np.int64)  # (N,)
    for row, clip in enumerate(clips):
        length = min(len(clip), window_samples)
        waveforms[row, :length] = clip[:length]
        num_samples[row] = length
    return waveforms, num_samples


def synthetic_clips(window_samples: int, sample_rate: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    t = np.arange(window_samples) / sample_rate
    # a faint noise floor (-100 dBFS) under the tones: real audio has one, and without it the
    # quiet mel bins hold only float32 rounding noise, which PyTorch and ONNX Runtime round apart
    floor = 1e-5 * rng.standard_normal(window_samples)
    chirp = 0.5 * np.sin(2 * np.pi * (100 + 2000 * t / t[-1] / 2) * t) + floor
    harmonic = sum(0.2 / k * np.sin(2 * np.pi * 220 * k * t) for k in range(1, 6)) + floor
    noise = 0.1 * rng.standard_normal(window_samples)
    short = np.zeros(window_samples // 3)
    short[:: sample_rate // 8] = 0.8
    return [clip.astype(np.float32) for clip in (chirp, harmonic, noise, short)]


def run_reference(module: torch.nn.Module, waveforms: np.ndarray, num_samples: np.ndarray):
    """(embedding, logits | None, frames | None) of the PyTorch module."""
    with torch.no_grad():
        embedding, logits, *rest = module(torch.from_numpy(waveforms), torch.from_numpy(num_samples))
    frames = rest[0].numpy() if rest and rest[0] is not None else None
    return embedding.numpy(), None if logits is None else logits.numpy(), frames


def run_onnx(model_path, waveforms: np.ndarray, num_samples: np.ndarray) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    feeds = {"waveform": waveforms, "num_samples": num_samples}
    feeds = {i.name: feeds[i.name] for i in session.get_inputs()}
    return dict(zip(names, session.run(None, feeds), strict=True))


def check_parity(
    module, model_path, waveforms: np.ndarray, num_samples: np.ndarray, precision: str,
    logits_atol: float = FP32_LOGITS_ATOL,
) -> ParityReport:
    """logits_atol: fp32's bound on |logits diff| (zero-shot heads: scale * cosine, so the exporter
    passes COSINE_ATOL * their scale)."""
    ref_embedding, ref_logits, ref_frames = run_reference(module, waveforms, num_samples)
    got = run_onnx(model_path, waveforms, num_samples)
    cosine = cosine_rows(ref_embedding, got["embedding"])
    report = ParityReport(
        precision=precision,
        windows=len(waveforms),
        min_embedding_cosine=float(cosine.min()),
        max_embedding_abs_diff=float(np.abs(ref_embedding - got["embedding"]).max()),
        max_logits_abs_diff=None,
        top1_agreement=None,
    )
    min_cosine = FP32_MIN_COSINE if precision == "fp32" else REDUCED_MIN_COSINE
    report.tolerances["min_embedding_cosine"] = min_cosine
    if report.min_embedding_cosine < min_cosine:
        report.failures.append(f"embedding cosine {report.min_embedding_cosine:.6f} < {min_cosine}")
    if ref_frames is not None:
        frames_cosine = cosine_rows(ref_frames.reshape(-1, ref_frames.shape[-1]), got["frames"].reshape(-1, ref_frames.shape[-1]))
        report.min_frames_cosine = float(frames_cosine.min())
        report.tolerances["min_frames_cosine"] = min_cosine
        if report.min_frames_cosine < min_cosine:
            report.failures.append(f"frames cosine {report.min_frames_cosine:.6f} < {min_cosine}")
    if ref_logits is not None:
        logits = got["logits"]
        report.max_logits_abs_diff = float(np.abs(ref_logits - logits).max())
        top_two = np.sort(ref_logits, axis=1)[:, -2:] if ref_logits.shape[1] > 1 else None
        decisive = (
            (top_two[:, 1] - top_two[:, 0]) >= TOP1_DECISIVE_MARGIN if top_two is not None
            else np.ones(len(ref_logits), dtype=bool)
        )
        agree = ref_logits.argmax(axis=1) == logits.argmax(axis=1)
        report.top1_agreement = float(agree[decisive].mean()) if decisive.any() else 1.0
        report.top1_compared_windows = int(decisive.sum())
        if precision == "fp32":
            report.tolerances["max_logits_abs_diff"] = logits_atol
            if report.max_logits_abs_diff > logits_atol:
                report.failures.append(f"|logits diff| {report.max_logits_abs_diff:.3g} > {logits_atol:.3g}")
        else:
            report.tolerances["top1_agreement"] = 1.0
            if report.top1_agreement < 1.0:
                report.failures.append(f"top-1 tag differs on {1 - report.top1_agreement:.0%} of windows")
    return report


# -- the text tower (CLAP) -----------------------------------------------------------------------
TEXT_MIN_COSINE = 0.99999
TEXT_MAX_ABS_DIFF = 1e-5
# what the text graph is checked on besides the labels' prompts: short and long, every padding
# length in one batch, and one past max_tokens (cut the way the service cuts it)
PARITY_TEXTS = (
    "a dog barking in the rain",
    "music",
    "This is a sound of speech.",
    "the quiet hum of an air conditioner in an empty office, then a door closes",
)


@dataclass
class TextParityReport:
    texts: int
    min_cosine: float
    max_abs_diff: float
    tolerances: dict[str, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    reference: str = "PyTorch text tower (float32, CPU) vs ONNX Runtime (CPUExecutionProvider), same token ids"

    @property
    def passed(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        verdict = "passed" if self.passed else "FAILED (" + "; ".join(self.failures) + ")"
        return f"text tower on {self.texts} texts: min cosine {self.min_cosine:.6f}, max |diff| {self.max_abs_diff:.3g}: {verdict}"

    def to_json(self) -> dict:
        return {**asdict(self), "passed": self.passed}


def parity_texts(prompts: list[str], max_tokens: int) -> list[str]:
    """The texts a text graph is checked on: fixed phrases, the first prompts, one too long to keep."""
    too_long = " ".join(["sound"] * (max_tokens + 8))
    return [*PARITY_TEXTS, *prompts[:16], too_long]


def check_text_parity(module: torch.nn.Module, model_path, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> TextParityReport:
    import onnxruntime as ort

    with torch.no_grad():
        reference = module(input_ids, attention_mask).numpy()  # (N, P)
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()})[0]
    cosine = cosine_rows(reference, got)
    report = TextParityReport(
        texts=len(reference),
        min_cosine=float(cosine.min()),
        max_abs_diff=float(np.abs(reference - got).max()),
        tolerances={"min_cosine": TEXT_MIN_COSINE, "max_abs_diff": TEXT_MAX_ABS_DIFF},
    )
    if report.min_cosine < TEXT_MIN_COSINE:
        report.failures.append(f"text cosine {report.min_cosine:.6f} < {TEXT_MIN_COSINE}")
    if report.max_abs_diff > TEXT_MAX_ABS_DIFF:
        report.failures.append(f"text |diff| {report.max_abs_diff:.3g} > {TEXT_MAX_ABS_DIFF}")
    return report
