"""The engine: bundles loaded and warmed up, one batcher each, and the per-request assembly.

A library first; the HTTP app and the catalog job are two clients of it:

    async with Engine(["path/to/bundle"], EngineConfig()) as engine:
        result = await engine.embed(waveform, model="default", top_k=5, windows=True)
        result = await engine.embed_audio(open("clip.ogg", "rb").read())
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from earshot import bundle as bundle_format
from earshot import metrics
from earshot.engine.assembly import WindowResult, assemble_clip
from earshot.engine.audio import Audio, AudioLimits, decode
from earshot.engine.batcher import Batcher, BatcherConfig, JobResult
from earshot.engine.config import EngineConfig
from earshot.engine.errors import DeadlineExceeded, Draining, EmptyAudio, NotReady, UnknownModel
from earshot.engine.pooling import Tag
from earshot.engine.runner import Runner
from earshot.engine.self_test import SelfTestFailed, SelfTestResult, open_runner
from earshot.engine.windows import Windows, WindowSpec, cut, window_spec

log = logging.getLogger(__name__)

BundleReference = str | os.PathLike[str] | bundle_format.Bundle


class EngineSelfTestFailed(SelfTestFailed):
    """One or more bundles failed their self-test: the engine does not serve."""

    def __init__(self, results: list[SelfTestResult]) -> None:
        super().__init__(results[0])
        self.results = results
        self.args = ("; ".join(result.message for result in results),)


@dataclass(frozen=True)
class EmbedResult:
    model: str
    duration_s: float
    embedding: np.ndarray  # (embedding_dim,) float32: mean of the window embeddings
    tags: list[Tag]  # top-k of the mean window tag scores, best first
    windows: list[WindowResult] | None  # per window, when asked for
    num_windows: int
    queue_time_ms: float
    inference_time_ms: float


@dataclass
class _Model:
    bundle: bundle_format.Bundle
    runner: Runner
    batcher: Batcher

    @property
    def spec(self) -> WindowSpec:
        return window_spec(self.bundle.manifest)


class Engine:
    """Serves one or more bundles. Enter it (`async with`) to load, verify and warm them up."""

    def __init__(self, bundles: Sequence[BundleReference], config: EngineConfig | None = None) -> None:
        if not bundles:
            raise ValueError("an engine needs at least one bundle (see earshot.api.bundles.resolve_bundles)")
        self.config = config if config is not None else EngineConfig()
        self._references = list(bundles)
        self._models: dict[str, _Model] = {}
        self._order: list[str] = []
        self._ready = False
        self._accepting = False
        self._decoder: ThreadPoolExecutor | None = None
        self.self_tests: dict[str, SelfTestResult] = {}  # by model name, as the runners were opened
        self._limits = AudioLimits(max_bytes=self.config.max_body_bytes, max_seconds=self.config.max_audio_seconds)

    # -- life cycle ---------------------------------------------------------------------------------
    async def __aenter__(self) -> Engine:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Load every bundle (checksums verified), open its session, warm it up; then take requests.

        The blocking work runs in a thread, so an event loop serving health probes stays responsive.
        """
        loaded = await asyncio.to_thread(self._load_all)
        batcher_config = BatcherConfig(
            max_batch_windows=self.config.max_batch_windows,
            max_wait_s=self.config.max_wait_ms / 1000.0,
            max_queued_windows=self.config.max_queued_windows,
            runner_threads=self.config.runner_threads,
        )
        for runner in loaded:  # batchers are made here, on the event loop they serve
            name = runner.bundle.name
            self._models[name] = _Model(runner.bundle, runner, Batcher(name, runner, batcher_config))
            self._order.append(name)
            self._models[name].batcher.start()
        self._decoder = ThreadPoolExecutor(self.config.decode_threads, thread_name_prefix="earshot-decode")
        self._accepting = True
        self._ready = True
        log.info("engine ready: %s", ", ".join(self._order))

    def _load_all(self) -> list[Runner]:
        """In a worker thread: verify and load every bundle, open, warm up and self-test its session.

        Every bundle is tried; when any fails its self-test, EngineSelfTestFailed names them all.
        """
        runners: list[Runner] = []
        runner_config = self.config.runner_config()
        for reference in self._references:
            loaded = self._load_bundle(reference)
            if any(runner.bundle.name == loaded.name for runner in runners):
                raise bundle_format.BundleError(f"two bundles are named {loaded.name!r}")
            began = time.perf_counter()
            try:
                runner, result = open_runner(loaded, runner_config, self.config.self_test_on_failure)
            except SelfTestFailed as failure:
                self.self_tests[loaded.name] = failure.result
                continue
            self.self_tests[loaded.name] = result
            log.info("model %s loaded and warmed up in %.2f s", loaded.name, time.perf_counter() - began)
            runners.append(runner)
        failed = [result for result in self.self_tests.values() if not result.passed]
        if failed:
            raise EngineSelfTestFailed(failed)
        return runners

    def _load_bundle(self, reference: BundleReference) -> bundle_format.Bundle:
        if isinstance(reference, bundle_format.Bundle):
            bundle_format.verify_files(reference.path, reference.manifest)
            return reference
        path = bundle_format.resolve(str(reference), self.config.cache_dir)
        return bundle_format.load(path, verify=True)

    @property
    def ready(self) -> bool:
        """Every bundle loaded and warmed up, and not draining."""
        return self._ready and self._accepting

    @property
    def idle(self) -> bool:
        return all(m.batcher.pending_requests == 0 for m in self._models.values())

    async def drain(self, timeout_s: float | None = None) -> bool:
        """Stop admitting; wait until every admitted request is answered. True if it got idle in time."""
        self._accepting = False
        for model in self._models.values():
            model.batcher.stop_admitting()
        waits = [model.batcher.wait_idle() for model in self._models.values()]
        try:
            await asyncio.wait_for(asyncio.gather(*waits), timeout_s)
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        """Stop now: refuse queued work, wait for running batches, free threads."""
        self._accepting = False
        self._ready = False
        await asyncio.gather(*(model.batcher.close() for model in self._models.values()))
        if self._decoder is not None:
            self._decoder.shutdown(wait=False, cancel_futures=True)

    # -- what is served -----------------------------------------------------------------------------
    @property
    def models(self) -> list[str]:
        """Names of the bundles served, the default (the first) first."""
        return list(self._order)

    @property
    def default_model(self) -> str:
        if not self._order:
            raise NotReady("the engine has not loaded its bundles yet")
        return self._order[0]

    def resolve(self, model: str | None) -> str:
        """A requested model name -> the name served. None and "default" mean the default model."""
        if not self._order:
            raise NotReady("the engine has not loaded its bundles yet")
        if model is None:
            return self.default_model
        if model in self._models:
            return model
        alias = bundle_format.ALIASES.get(model)
        if alias is not None:
            return alias if alias in self._models else self.default_model
        raise UnknownModel(f"no model {model!r}; this server has {', '.join(self._order)}")

    def bundle(self, model: str | None = None) -> bundle_format.Bundle:
        return self._models[self.resolve(model)].bundle

    def self_test(self, model: str | None = None) -> SelfTestResult:
        return self.self_tests[self.resolve(model)]

    def providers(self, model: str | None = None) -> list[str]:
        """The ONNX Runtime providers the model's session actually uses."""
        return list(self._models[self.resolve(model)].runner.providers)

    def queued_windows(self, model: str | None = None) -> int:
        return self._models[self.resolve(model)].batcher.queued_windows

    def dropped_windows(self, model: str | None = None) -> dict[str, int]:
        """Windows dropped before running, by reason ("deadline", "cancelled", ...), since start."""
        return dict(self._models[self.resolve(model)].batcher.stats.dropped)

    def windows_run(self, model: str | None = None) -> int:
        """Windows run through the model since start (warm-up not counted)."""
        return self._models[self.resolve(model)].batcher.stats.windows

    def batches_run(self, model: str | None = None) -> int:
        return self._models[self.resolve(model)].batcher.stats.batches

    # -- requests -----------------------------------------------------------------------------------
    async def decode(self, data: bytes, model: str | None = None) -> Audio:
        """Decode audio bytes for a model (mono, its sample rate) in the decoding threads."""
        name = self._check_accepting(model)
        sample_rate = self._models[name].bundle.manifest.sample_rate
        assert self._decoder is not None
        began = time.perf_counter()
        audio = await asyncio.get_running_loop().run_in_executor(
            self._decoder, decode, data, sample_rate, self._limits
        )
        metrics.DECODE_TIME.observe(time.perf_counter() - began)
        return audio

    async def embed_audio(
        self,
        data: bytes,
        model: str | None = None,
        *,
        top_k: int | None = None,
        windows: bool = False,
        timeout_s: float | None = None,
    ) -> EmbedResult:
        """Decode `data` (any format soundfile reads) and embed it; the timeout covers both."""
        deadline = time.monotonic() + (timeout_s if timeout_s is not None else self.config.request_timeout_s)
        audio = await self.decode(data, model)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DeadlineExceeded("the deadline passed while decoding the audio")
        return await self.embed(audio.waveform, model, top_k=top_k, windows=windows, timeout_s=remaining)

    async def embed(
        self,
        waveform: np.ndarray,
        model: str | None = None,
        *,
        top_k: int | None = None,
        windows: bool = False,
        timeout_s: float | None = None,
    ) -> EmbedResult:
        """Embed a mono float32 waveform (samples,) already at the model's sample rate."""
        name = self._check_accepting(model)
        served = self._models[name]
        manifest = served.bundle.manifest
        waveform = np.asarray(waveform, dtype=np.float32)
        if waveform.ndim != 1:
            raise ValueError(f"waveform must be mono, shape (samples,); got {waveform.shape}")
        if waveform.shape[0] == 0:
            raise EmptyAudio("the waveform holds no samples")
        cut_windows = cut(waveform, served.spec)
        result = await served.batcher.submit(
            cut_windows, timeout_s if timeout_s is not None else self.config.request_timeout_s
        )
        duration_s = waveform.shape[0] / manifest.sample_rate
        metrics.AUDIO_SECONDS.labels(model=name).inc(duration_s)
        return self._assemble(served, result, cut_windows, duration_s, top_k, windows)

    def _check_accepting(self, model: str | None) -> str:
        if not self._ready:
            raise NotReady("the engine is still loading its bundles")
        if not self._accepting:
            raise Draining("the engine is shutting down and takes no new requests")
        return self.resolve(model)

    def _assemble(
        self,
        served: _Model,
        result: JobResult,
        cut_windows: Windows,
        duration_s: float,
        k: int | None,
        with_windows: bool,
    ) -> EmbedResult:
        clip = assemble_clip(
            served.bundle,
            result.embedding,
            result.logits,
            cut_windows,
            self.config.default_top_k if k is None else k,
            with_windows,
        )
        return EmbedResult(
            model=served.bundle.name,
            duration_s=duration_s,
            embedding=clip.embedding,
            tags=clip.tags,
            windows=clip.windows,
            num_windows=len(cut_windows),
            queue_time_ms=result.queue_time_s * 1000.0,
            inference_time_ms=result.inference_time_s * 1000.0,
        )
