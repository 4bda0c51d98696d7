"""One ONNX Runtime session per bundle: feeds a batch of windows, returns the graph's outputs.

Names, dtypes and the window length come from the manifest. `run` blocks (ONNX Runtime releases
the GIL while it computes): the batcher calls it from worker threads, never from the event loop.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime

from earshot.bundle import EMBEDDING_OUTPUT, FRAMES_OUTPUT, LOGITS_OUTPUT, NUM_SAMPLES_INPUT, WAVEFORM_INPUT, Bundle
from earshot.engine import int8

log = logging.getLogger(__name__)

PROVIDERS = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}


@dataclass(frozen=True)
class RunnerConfig:
    providers: tuple[str, ...]  # short names, in order of preference: "tensorrt", "cuda", "cpu"
    intra_op_threads: int  # 0 = ONNX Runtime's choice
    max_batch_windows: int  # the largest batch (TensorRT's optimisation profile is sized for it)
    cache_dir: Path  # TensorRT engine and timing caches live under it
    spin_threads: bool = False  # let idle intra-op threads spin (see Settings.spin_threads)
    arithmetic: str = "fast"  # "fast" or "reference" (open_session; see Settings.arithmetic)


@dataclass(frozen=True)
class BatchOutput:
    embedding: np.ndarray  # (batch, embedding_dim) float32
    logits: np.ndarray | None  # (batch, num_labels) float32, None when the graph has no tagging head
    frames: np.ndarray | None = None  # (batch, n_frames, frame_dim) float32, where the graph has frames


ARITHMETICS = ("fast", "reference")


def open_session(
    model_path: Path,
    precision: str,
    providers: list[Any],
    arithmetic: str = "fast",
    options: onnxruntime.SessionOptions | None = None,
) -> tuple[onnxruntime.InferenceSession, str]:
    """An ONNX Runtime session for a bundle graph, and what it computes with, in words.

    "fast": the graph as exported, on the fastest exact kernels of this CPU: an int8 graph whose
    weights could saturate this CPU's u8s8 kernels runs in its u8 form (int8.py), same integers.
    "reference": the graph's meaning in float arithmetic (int8.reference_model), for self-tests
    and as the fallback of a runner that fails its self-test.
    """
    if arithmetic not in ARITHMETICS:
        raise ValueError(f"arithmetic must be one of {ARITHMETICS}, got {arithmetic!r}")
    options = options or _default_options()
    model: str | bytes = str(model_path)
    described = f"{precision} graph as exported"
    if precision == "int8":
        graph = onnx.load(str(model_path))
        if arithmetic == "reference":
            graph = int8.reference_model(graph)
            for key, value in int8.REFERENCE_SESSION_CONFIG.items():
                options.add_session_config_entry(key, value)
            described = "int8 reference: Q/DQ as float, integer MatMuls summed exactly in float64"
        else:
            graph, described = int8.exact_integer_form(graph)
        model = graph.SerializeToString()
    elif arithmetic == "reference":
        described = f"{precision} reference (the graph's own float arithmetic)"
    session = onnxruntime.InferenceSession(model, sess_options=options, providers=providers)
    return session, described


def _default_options() -> onnxruntime.SessionOptions:
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only
    return options


def session_options(config: RunnerConfig) -> onnxruntime.SessionOptions:
    """A serving session's options: full graph optimisation, sequential, the configured threads."""
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = config.intra_op_threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if config.spin_threads else "0")
    return options


class Runner:
    def __init__(self, bundle: Bundle, config: RunnerConfig) -> None:
        manifest = bundle.manifest
        self.bundle = bundle
        self.config = config
        self._waveform_dtype = np.dtype(_spec(manifest.inputs, WAVEFORM_INPUT).dtype)
        self._num_samples_dtype = (
            np.dtype(_spec(manifest.inputs, NUM_SAMPLES_INPUT).dtype) if manifest.takes_num_samples else None
        )
        self._output_names = [EMBEDDING_OUTPUT] + ([LOGITS_OUTPUT] if manifest.has_logits else [])
        self._output_names += [FRAMES_OUTPUT] if manifest.has_frames else []
        self.session, self.arithmetic = open_session(
            bundle.model_path, manifest.precision, self._providers(), config.arithmetic, session_options(config)
        )
        self.providers: list[str] = self.session.get_providers()
        log.info("model %s runs on %s: %s", manifest.name, ", ".join(self.providers), self.arithmetic)

    def run(self, waveform: np.ndarray, num_samples: np.ndarray) -> BatchOutput:
        """waveform (batch, input_samples), num_samples (batch,) -> the graph's outputs.

        input_samples is the window with its context (manifest.input_samples); num_samples counts
        the real samples of each window's own span.
        """
        feeds: dict[str, np.ndarray] = {WAVEFORM_INPUT: np.ascontiguousarray(waveform, dtype=self._waveform_dtype)}
        if self._num_samples_dtype is not None:
            feeds[NUM_SAMPLES_INPUT] = np.ascontiguousarray(num_samples, dtype=self._num_samples_dtype)
        outputs = dict(zip(self._output_names, self.session.run(self._output_names, feeds), strict=True))
        embedding = np.asarray(outputs[EMBEDDING_OUTPUT], dtype=np.float32)  # (batch, embedding_dim)
        logits = outputs.get(LOGITS_OUTPUT)  # (batch, num_labels)
        frames = outputs.get(FRAMES_OUTPUT)  # (batch, n_frames, frame_dim)
        return BatchOutput(
            embedding=embedding,
            logits=None if logits is None else np.asarray(logits, dtype=np.float32),
            frames=None if frames is None else np.asarray(frames, dtype=np.float32),
        )

    def warm_up(self) -> None:
        """Run the smallest batch once, and on an accelerator the largest too, so first requests pay
        no set-up cost. On the CPU provider nothing is set up per batch size (MLAS packs the weights
        when the session is made), and a full batch of a large model is tens of seconds of start-up
        (AST-base: 32 windows, 27 s on 2 cores) that buys nothing."""
        manifest = self.bundle.manifest
        window, length = manifest.window_samples, manifest.input_samples
        on_cpu_only = set(self.providers) <= {"CPUExecutionProvider"}
        for batch in sorted({1} if on_cpu_only else {1, self.config.max_batch_windows}):
            waveform = np.zeros((batch, length), dtype=np.float32)  # (batch, input_samples)
            num_samples = np.full((batch,), window, dtype=np.int64)  # (batch,)
            self.run(waveform, num_samples)

    # -- providers ---------------------------------------------------------------------------------
    def _providers(self) -> list[tuple[str, dict[str, Any]]]:
        available = set(onnxruntime.get_available_providers())
        chosen: list[tuple[str, dict[str, Any]]] = []
        for short in self.config.providers:
            if short not in PROVIDERS:
                raise ValueError(f"unknown provider {short!r}; choose from {', '.join(PROVIDERS)}")
            full = PROVIDERS[short]
            if full not in available:
                log.warning(
                    "provider %s is not available in this ONNX Runtime (%s); model %s falls back",
                    short,
                    ", ".join(sorted(available)),
                    self.bundle.name,
                )
                continue
            chosen.append((full, self._provider_options(short)))
        if not any(name == PROVIDERS["cpu"] for name, _ in chosen):
            chosen.append((PROVIDERS["cpu"], {}))
        return chosen

    def _provider_options(self, short: str) -> dict[str, Any]:
        """Deployment options are this runner's to choose, from facts of the bundle (precision,
        input length) and this server's config (cache, largest batch); a manifest written before
        bundles stopped carrying provider options has them ignored."""
        manifest = self.bundle.manifest
        if short == "cuda":
            return {"cudnn_conv_algo_search": "HEURISTIC"}  # the exhaustive search costs seconds per shape
        if short != "tensorrt":
            return {}
        # One optimisation profile: the input length (window and context) is fixed, the batch runs
        # from 1 to the largest; engines are cached per bundle file.
        cache = self.config.cache_dir / "tensorrt" / f"{manifest.name}-{manifest.files[manifest.model_file][:12]}"
        cache.mkdir(parents=True, exist_ok=True)
        length = manifest.input_samples

        def shapes(batch: int) -> str:
            names = [f"{WAVEFORM_INPUT}:{batch}x{length}"]
            if manifest.takes_num_samples:
                names.append(f"{NUM_SAMPLES_INPUT}:{batch}")
            return ",".join(names)

        return {
            # fp16 kernels unless the bundle is int8 (dynamic quantisation's integer MatMuls are not
            # TensorRT's: that variant runs its float parts on TensorRT)
            "trt_fp16_enable": manifest.precision != "int8",
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(cache),
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": str(cache),
            "trt_profile_min_shapes": shapes(1),
            "trt_profile_opt_shapes": shapes(self.config.max_batch_windows),
            "trt_profile_max_shapes": shapes(self.config.max_batch_windows),
        }


def _spec(specs: list[Any], name: str) -> Any:
    for spec in specs:
        if spec.name == name:
            return spec
    raise KeyError(name)
