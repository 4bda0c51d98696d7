"""All of earshot's settings, in one object: the only reader of the environment.

Every setting can be given as a command-line flag or as an environment variable named
`EARSHOT_` + the setting's name in capitals (`EARSHOT_MAX_QUEUED_WINDOWS`, ...).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from earshot.engine.config import EngineConfig


def _default_cache_dir() -> Path:
    return Path.home() / ".cache" / "earshot"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EARSHOT_", extra="ignore")

    # where bundles live
    cache_dir: Path = Field(default_factory=_default_cache_dir, description="bundle cache; names resolve here")
    bundles: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="bundle directories or cached names; empty = the default model"
    )

    # HTTP
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Bearer keys; empty = no authentication"
    )
    max_body_bytes: int = Field(50 * 1024 * 1024, gt=0)
    max_audio_seconds: float = Field(600.0, gt=0)
    request_timeout_s: float = Field(30.0, gt=0)
    grace_timeout_s: float = Field(30.0, ge=0, description="on SIGTERM, how long to finish admitted work")
    decode_threads: int = Field(2, ge=1, description="threads decoding and resampling audio")
    default_top_k: int = Field(5, ge=0, description="tags per answer when the request names no top_k")

    # ONNX Runtime
    providers: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["cpu"], description="in order of preference: tensorrt, cuda, cpu"
    )
    threads: int = Field(0, ge=0, description="intra-op threads per session; 0 = ONNX Runtime's choice")
    runner_threads: int = Field(1, ge=1, description="batches run at once per bundle")
    spin_threads: bool = Field(
        False,
        description="let ONNX Runtime's idle threads spin-wait: faster for a session alone on its cores, "
        "slower when decoding and HTTP share them (measured on 2 cores: BENCHMARKS.md)",
    )

    arithmetic: Literal["fast", "reference"] = Field(
        "fast",
        description="fast: the fastest exact kernels of this CPU; reference: every bundle in its reference "
        "arithmetic on the CPU (int8 Q/DQ as float, integer MatMuls in float64; slower), as its self-test "
        "expectations were computed",
    )
    self_test_on_failure: Literal["refuse", "fallback"] = Field(
        "refuse",
        description="when a bundle's self-test fails on the chosen provider: refuse to serve it (never ready), or "
        "fall back to its exact reference arithmetic on the CPU (slower) and say so",
    )

    # the batcher
    max_batch_windows: int = Field(32, ge=1)
    max_wait_ms: float = Field(5.0, ge=0)
    max_queued_windows: int = Field(4096, ge=1)

    # the text tower (CLAP bundles): text embeddings, labels per request, search by text
    max_batch_tokens: int = Field(8192, ge=1, description="padded tokens (rows x longest) per text batch")
    max_queued_texts: int = Field(4096, ge=1, description="texts waiting for the text tower before 429")
    max_texts_per_request: int = Field(2048, ge=1, description="strings in one /v1/embeddings text request")
    max_text_chars: int = Field(10000, ge=1, description="characters in one string (token lists are cut anyway)")
    max_labels: int = Field(1000, ge=1, description="labels in one zero-shot /v1/embed request")
    label_cache_size: int = Field(10000, ge=0, description="label prompt embeddings kept per model (LRU)")

    # segments (POST /v1/embed?segments=true, earshot embed --segments): defaults a request may override
    segment_threshold: float = Field(0.5, ge=0, le=1, description="a label's segment opens at this window score")
    segment_hysteresis: float = Field(0.1, ge=0, le=1, description="and stays open down to threshold - hysteresis")
    segment_min_duration_s: float = Field(0.0, ge=0, description="shorter segments are dropped")
    segment_merge_gap_s: float = Field(0.0, ge=0, description="segments of one label this close are merged")

    # streams (GET /v1/stream, WebSocket)
    max_streams: int = Field(64, ge=0, description="WebSocket streams open at once; over it an upgrade gets 429")
    stream_idle_timeout_s: float = Field(30.0, gt=0, description="a stream silent this long is closed (4408)")
    stream_max_backlog_s: float = Field(
        60.0, gt=0, description="audio received but not yet answered, in seconds; past it a stream is closed (4413)"
    )

    # search
    indexes: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="vector index directories (earshot index) served at /v1/search"
    )

    def engine_config(self, **overrides: object) -> EngineConfig:
        """The engine's part of the settings (the engine knows nothing of HTTP or the environment)."""
        values = {name: getattr(self, name) for name in EngineConfig.__dataclass_fields__}
        values["providers"] = tuple(self.providers)
        values.update(overrides)
        return EngineConfig(**values)

    @field_validator("bundles", "api_keys", "providers", "indexes", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value
