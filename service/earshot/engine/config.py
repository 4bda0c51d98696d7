"""What the engine needs to know, and nothing of HTTP: its own small config.

`Settings.engine_config()` makes one from the service's settings (flags, EARSHOT_* variables); a
library user or the catalog job builds one directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from earshot.engine.runner import RunnerConfig
from earshot.engine.segments import SegmentConfig


def _default_cache_dir() -> Path:
    return Path.home() / ".cache" / "earshot"


@dataclass(frozen=True)
class EngineConfig:
    cache_dir: Path = field(default_factory=_default_cache_dir)  # bundle names resolve in <cache_dir>/bundles
    # audio intake
    max_body_bytes: int = 50 * 1024 * 1024  # the largest audio file accepted
    max_audio_seconds: float = 600.0  # the longest decoded clip accepted
    decode_threads: int = 2  # threads decoding and resampling audio
    # requests
    request_timeout_s: float = 30.0  # a request past it is answered DeadlineExceeded, its windows dropped
    default_top_k: int = 5  # tags per answer when a call names no top_k
    # the batcher
    max_batch_windows: int = 32
    max_wait_ms: float = 5.0
    max_queued_windows: int = 4096
    runner_threads: int = 1  # batches run at once per bundle
    # the text tower (CLAP bundles)
    max_batch_tokens: int = 8192  # padded tokens (rows x longest) per text batch
    max_queued_texts: int = 4096
    max_texts_per_request: int = 2048  # strings in one /v1/embeddings request (OpenAI's limit)
    max_text_chars: int = 10000  # one string, before tokenising (longer token lists are cut)
    max_labels: int = 1000  # labels in one zero-shot request
    label_cache_size: int = 10000  # label prompt embeddings kept per model
    # segments (sound events over time): the defaults a request may override
    segment_threshold: float = 0.5
    segment_hysteresis: float = 0.1
    segment_min_duration_s: float = 0.0
    segment_merge_gap_s: float = 0.0
    # ONNX Runtime
    providers: tuple[str, ...] = ("cpu",)  # in order of preference: tensorrt, cuda, cpu
    threads: int = 0  # intra-op threads per session; 0 = ONNX Runtime's choice
    spin_threads: bool = False
    arithmetic: str = "fast"  # "fast" or "reference" (runner.open_session)
    self_test_on_failure: str = "refuse"  # "refuse" or "fallback" (self_test.open_runner)

    def segment_config(self, **overrides: object) -> SegmentConfig:
        """The segment finder's settings, with a request's overrides (None: the default)."""
        values: dict[str, object] = {
            "threshold": self.segment_threshold,
            "hysteresis": self.segment_hysteresis,
            "min_duration_s": self.segment_min_duration_s,
            "merge_gap_s": self.segment_merge_gap_s,
        }
        values.update({name: value for name, value in overrides.items() if value is not None})
        return SegmentConfig(**values)  # type: ignore[arg-type]

    def runner_config(self) -> RunnerConfig:
        """The ONNX Runtime side, as every runner (the engine's, a Ray actor's) takes it."""
        return RunnerConfig(
            providers=tuple(self.providers),
            intra_op_threads=self.threads,
            max_batch_windows=self.max_batch_windows,
            cache_dir=Path(self.cache_dir),
            spin_threads=self.spin_threads,
            arithmetic=self.arithmetic,
        )
