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
from earshot.engine.assembly import ClipFrames, WindowResult, assemble_clip
from earshot.engine.audio import Audio, AudioLimits, decode
from earshot.engine.batcher import Batcher, BatcherConfig, JobResult
from earshot.engine.config import EngineConfig
from earshot.engine.errors import (
    DeadlineExceeded,
    Draining,
    EmptyAudio,
    InvalidInput,
    InvalidText,
    NoTextTower,
    NotReady,
    UnknownModel,
)
from earshot.engine.pooling import Tag, tag_scores
from earshot.engine.runner import Runner
from earshot.engine.segments import Segment, SegmentConfig
from earshot.engine.self_test import SelfTestFailed, SelfTestResult, open_runner
from earshot.engine.text import TextEncoder
from earshot.engine.text_batcher import TextBatcher, TextBatcherConfig
from earshot.engine.windows import Windows, WindowSpec, cut, window_spec
from earshot.engine.zero_shot import LabelCache, prompts_for, zero_shot_logits

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
    frames: ClipFrames | None = None  # frame features with timestamps, when asked for (speech encoders)
    segments: list[Segment] | None = None  # sound events over time, when asked for


@dataclass(frozen=True)
class TextResult:
    model: str
    embedding: np.ndarray  # (n_texts, embedding_dim) float32, unit norm
    tokens: int  # token ids run, special tokens included


@dataclass
class _Text:
    encoder: TextEncoder
    batcher: TextBatcher
    labels: LabelCache


@dataclass
class _Model:
    bundle: bundle_format.Bundle
    runner: Runner
    batcher: Batcher
    text: _Text | None = None

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
        text_config = TextBatcherConfig(
            max_batch_tokens=self.config.max_batch_tokens,
            max_wait_s=self.config.max_wait_ms / 1000.0,
            max_queued_texts=self.config.max_queued_texts,
        )
        for runner, encoder in loaded:  # batchers are made here, on the event loop they serve
            name = runner.bundle.name
            text = None
            if encoder is not None:
                text = _Text(encoder, TextBatcher(name, encoder, text_config), LabelCache(name, self.config.label_cache_size))
                text.batcher.start()
            self._models[name] = _Model(runner.bundle, runner, Batcher(name, runner, batcher_config), text)
            self._order.append(name)
            self._models[name].batcher.start()
        self._decoder = ThreadPoolExecutor(self.config.decode_threads, thread_name_prefix="earshot-decode")
        self._accepting = True
        self._ready = True
        log.info("engine ready: %s", ", ".join(self._order))

    def _load_all(self) -> list[tuple[Runner, TextEncoder | None]]:
        """In a worker thread: verify and load every bundle, open, warm up and self-test its session
        (and open its text tower, where it has one).

        Every bundle is tried; when any fails its self-test, EngineSelfTestFailed names them all.
        """
        runners: list[tuple[Runner, TextEncoder | None]] = []
        runner_config = self.config.runner_config()
        for reference in self._references:
            loaded = self._load_bundle(reference)
            if any(runner.bundle.name == loaded.name for runner, _ in runners):
                raise bundle_format.BundleError(f"two bundles are named {loaded.name!r}")
            began = time.perf_counter()
            try:
                runner, result = open_runner(loaded, runner_config, self.config.self_test_on_failure)
            except SelfTestFailed as failure:
                self.self_tests[loaded.name] = failure.result
                continue
            self.self_tests[loaded.name] = result
            encoder = None
            if loaded.manifest.has_text:
                encoder = TextEncoder(loaded, runner_config)
                encoder.warm_up()
                encoder.self_test()
            log.info("model %s loaded and warmed up in %.2f s", loaded.name, time.perf_counter() - began)
            runners.append((runner, encoder))
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
            if model.text is not None:
                model.text.batcher.stop_admitting()
        waits = [model.batcher.wait_idle() for model in self._models.values()]
        waits += [model.text.batcher.wait_idle() for model in self._models.values() if model.text is not None]
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
        await asyncio.gather(*(model.text.batcher.close() for model in self._models.values() if model.text))
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

    def has_text(self, model: str | None = None) -> bool:
        """Whether the model has a text tower (text embeddings, labels per request, search by text)."""
        return self._models[self.resolve(model)].text is not None

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
        labels: list[str] | None = None,
        prompt: str | None = None,
        frames: bool = False,
        segments: SegmentConfig | None = None,
    ) -> EmbedResult:
        """Decode `data` (any format soundfile reads) and embed it; the timeout covers both."""
        deadline = time.monotonic() + (timeout_s if timeout_s is not None else self.config.request_timeout_s)
        self._check_options(self.resolve(model), labels, prompt, frames, segments)  # before the work of decoding
        audio = await self.decode(data, model)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DeadlineExceeded("the deadline passed while decoding the audio")
        return await self.embed(
            audio.waveform, model, top_k=top_k, windows=windows, timeout_s=remaining, labels=labels, prompt=prompt,
            frames=frames, segments=segments,
        )

    async def embed(
        self,
        waveform: np.ndarray,
        model: str | None = None,
        *,
        top_k: int | None = None,
        windows: bool = False,
        timeout_s: float | None = None,
        labels: list[str] | None = None,
        prompt: str | None = None,
        frames: bool = False,
        segments: SegmentConfig | None = None,
    ) -> EmbedResult:
        """Embed a mono float32 waveform (samples,) already at the model's sample rate.

        labels (models with a text tower): tags are scored over exactly these labels, zero-shot,
        each embedded as `prompt` (default: the bundle's) with the label in its '{}'.
        frames (models with frame features): also the clip's frames with their timestamps.
        """
        name = self._check_accepting(model)
        self._check_options(name, labels, prompt, frames, segments)
        served = self._models[name]
        manifest = served.bundle.manifest
        waveform = np.asarray(waveform, dtype=np.float32)
        if waveform.ndim != 1:
            raise ValueError(f"waveform must be mono, shape (samples,); got {waveform.shape}")
        if waveform.shape[0] == 0:
            raise EmptyAudio("the waveform holds no samples")
        deadline = time.monotonic() + (timeout_s if timeout_s is not None else self.config.request_timeout_s)
        label_embedding = None
        if labels is not None:
            label_embedding = await self._label_embeddings(served, labels, prompt, deadline - time.monotonic())
        cut_windows = cut(waveform, served.spec)
        result = await served.batcher.submit(cut_windows, deadline - time.monotonic())
        duration_s = waveform.shape[0] / manifest.sample_rate
        metrics.AUDIO_SECONDS.labels(model=name).inc(duration_s)
        if label_embedding is not None and served.text is not None and labels is not None:
            logits = zero_shot_logits(result.embedding, label_embedding, served.text.encoder.spec.logit_scale)
            result = JobResult(result.embedding, logits, result.queue_time_s, result.inference_time_s, result.frames)
            return self._assemble(
                served, result, cut_windows, duration_s, top_k, windows, labels, "softmax", frames, segments
            )
        return self._assemble(served, result, cut_windows, duration_s, top_k, windows, frames=frames, segments=segments)

    def _check_segments(self, name: str, segments: SegmentConfig, labels: list[str] | None) -> None:
        if labels is None and not self._models[name].bundle.manifest.has_logits:
            raise InvalidInput(f"model {name} has no tags to find segments of (a CLAP model can, with labels=)")
        problems = segments.validate()
        if problems:
            raise InvalidInput("; ".join(problems))

    def _check_frames(self, name: str) -> None:
        if not self._models[name].bundle.manifest.has_frames:
            raise InvalidInput(f"model {name} has no frame features (frames=true is for speech encoders)")

    async def embed_windows(
        self, cut_windows: Windows, model: str | None = None, *, top_k: int | None = None, timeout_s: float | None = None
    ) -> tuple[list[WindowResult], np.ndarray | None]:
        """Windows already cut (a stream's, stream_windows.StreamCutter) through the model's batcher:
        each window's result, and the tag scores (n, labels) (None without tags)."""
        name = self._check_accepting(model)
        served = self._models[name]
        result = await served.batcher.submit(
            cut_windows, timeout_s if timeout_s is not None else self.config.request_timeout_s
        )
        seconds = float((cut_windows.end_s - cut_windows.start_s).clip(min=0).sum())
        metrics.AUDIO_SECONDS.labels(model=name).inc(seconds)
        k = self.config.default_top_k if top_k is None else top_k
        clip = assemble_clip(served.bundle, result.embedding, result.logits, cut_windows, k, True)
        scores = None
        if result.logits is not None:
            scores = tag_scores(result.logits, served.bundle.manifest.tag_activation)
        return clip.windows or [], scores

    def window_spec(self, model: str | None = None) -> WindowSpec:
        return self._models[self.resolve(model)].spec

    async def embed_text(
        self, texts: list[str], model: str | None = None, *, timeout_s: float | None = None
    ) -> TextResult:
        """Embed strings with the model's text tower: (n, embedding_dim), unit norm, in the audio space."""
        name = self._check_accepting(model)
        text = self._text_of(name)
        self._check_texts(texts)
        token_ids = text.encoder.tokenize(texts)
        embedding = await text.batcher.submit(
            token_ids, timeout_s if timeout_s is not None else self.config.request_timeout_s
        )
        return TextResult(model=name, embedding=embedding, tokens=sum(len(ids) for ids in token_ids))

    def _text_of(self, name: str) -> _Text:
        text = self._models[name].text
        if text is None:
            raise NoTextTower(
                f"model {name} has no text tower: text embeddings, labels per request and search by text need "
                "a CLAP bundle exported with its tokenizer"
            )
        return text

    def _check_texts(self, texts: list[str], what: str = "input") -> None:
        if not texts:
            raise InvalidText(f"{what} is empty: give one or more strings")
        if len(texts) > self.config.max_texts_per_request:
            raise InvalidText(f"{what} has {len(texts)} strings; at most {self.config.max_texts_per_request} per request")
        for index, item in enumerate(texts):
            if not isinstance(item, str) or not item.strip():
                raise InvalidText(f"{what}[{index}] is empty")
            if len(item) > self.config.max_text_chars:
                raise InvalidText(f"{what}[{index}] has {len(item)} characters; at most {self.config.max_text_chars}")

    def _check_options(
        self, name: str, labels: list[str] | None, prompt: str | None, frames: bool, segments: SegmentConfig | None
    ) -> None:
        """What a request asks of the model must be something it has (422 otherwise)."""
        if labels is not None:
            self._check_labels(name, labels, prompt)
        if frames:
            self._check_frames(name)
        if segments is not None:
            self._check_segments(name, segments, labels)

    def _check_labels(self, name: str, labels: list[str], prompt: str | None) -> None:
        self._text_of(name)
        if len(labels) > self.config.max_labels:
            raise InvalidText(f"{len(labels)} labels; at most {self.config.max_labels} per request")
        self._check_texts(labels, "labels")
        if len(set(labels)) != len(labels):
            raise InvalidText("labels repeat: give each label once")
        if prompt is not None and prompt.count("{}") != 1:
            raise InvalidText(f"prompt {prompt!r} must contain '{{}}' exactly once (where the label goes)")

    async def _label_embeddings(
        self, served: _Model, labels: list[str], prompt: str | None, timeout_s: float
    ) -> np.ndarray:
        """(C, P) text embeddings of the labels' prompts, from the cache or the text tower."""
        assert served.text is not None  # _check_options made sure
        text = served.text
        prompts = prompts_for(labels, text.encoder.spec.prompt if prompt is None else prompt)
        found, missing = text.labels.lookup(prompts)
        if missing:
            embedded = await text.batcher.submit(text.encoder.tokenize(missing), timeout_s)
            text.labels.store(missing, embedded)
            found.update(zip(missing, embedded, strict=True))
        return np.stack([found[p] for p in prompts])  # (C, P)

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
        labels: list[str] | None = None,
        activation: str | None = None,
        frames: bool = False,
        segments: SegmentConfig | None = None,
    ) -> EmbedResult:
        clip = assemble_clip(
            served.bundle,
            result.embedding,
            result.logits,
            cut_windows,
            self.config.default_top_k if k is None else k,
            with_windows,
            labels,
            activation,
            result.frames if frames else None,
            segments,
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
            frames=clip.frames,
            segments=clip.segments,
        )
