"""Request and response bodies of the HTTP API (the public contract: README, "Using the API"), as pydantic models."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_TOP_K = 1000  # more tags than any label set we serve; bigger values are a mistake in the request


class EmbedParams(BaseModel):
    """Query parameters of POST /v1/embed."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, description='bundle name; "default" or none: the default model')
    top_k: int | None = Field(None, ge=0, le=MAX_TOP_K, description="tags to return (default: the server's)")
    windows: bool = Field(False, description="also return per-window results with timestamps")
    labels: list[str] | None = Field(
        None,
        description="models with a text tower (CLAP): score tags over exactly these labels, zero-shot "
        "(repeat the parameter once per label)",
    )
    prompt: str | None = Field(None, description="with labels: the prompt template, '{}' where the label goes")
    frames: bool = Field(False, description="models with frame features (speech encoders): also return them, timed")
    segments: bool = Field(False, description="also return per-label segments: sound events with start and end")
    threshold: float | None = Field(None, ge=0, le=1, description="segments: opening score (default: the server's)")
    hysteresis: float | None = Field(None, ge=0, le=1, description="segments: stay open down to threshold - this")
    min_duration_s: float | None = Field(None, ge=0, description="segments: drop shorter ones")
    merge_gap_s: float | None = Field(None, ge=0, description="segments: merge those of one label this close")
    label_threshold: list[str] | None = Field(
        None, description="segments: a label's own threshold, as label:score (repeatable)"
    )


class TagOut(BaseModel):
    label: str
    score: float


class WindowOut(BaseModel):
    start_s: float
    end_s: float
    embedding: list[float]
    tags: list[TagOut]


class FrameOut(BaseModel):
    start_s: float  # the frame's cell on the model's frame grid (20 ms for wav2vec 2.0 and kin)
    end_s: float
    embedding: list[float]


class SegmentOut(BaseModel):
    label: str
    start_s: float
    end_s: float
    score: float  # the mean window score over the segment


class EmbedResponse(BaseModel):
    model: str
    duration_s: float
    embedding: list[float]
    tags: list[TagOut]
    windows: list[WindowOut] | None = None
    frames: list[FrameOut] | None = None
    segments: list[SegmentOut] | None = None


# -- OpenAI-style ----------------------------------------------------------------------------------
class EmbeddingsRequest(BaseModel):
    """POST /v1/embeddings: inputs are audio files as base64 data URIs (`data:audio/wav;base64,...`),
    or, with `"modality": "text"` and a model with a text tower, strings to embed in the same space."""

    model: str = Field(description='bundle name, or "default"')
    input: str | list[str] = Field(description="one data URI or string, or a list of them")
    modality: Literal["audio", "text"] = Field(
        "audio", description="audio: inputs are data URIs; text: inputs are strings (CLAP's text tower)"
    )
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, gt=0, description="if given, must equal the model's embedding size")
    user: str | None = None


class EmbeddingItem(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str  # str: base64 of little-endian float32


class Usage(BaseModel):
    prompt_tokens: int  # windows run (audio), token ids run (text)
    total_tokens: int


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingItem]
    model: str
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "earshot"
    family: str
    precision: str
    sample_rate: int
    window_seconds: float
    hop_seconds: float
    embedding_dim: int
    num_labels: int
    modalities: list[str]  # "audio", and "text" where the model has a text tower
    providers: list[str]
    default: bool
    self_test: SelfTestOut


class SelfTestOut(BaseModel):
    """The model's self-test at load: its bundle's probe run on the provider it serves on."""

    status: Literal["passed", "fallback", "no_probe"]
    provider: str
    arithmetic: str
    min_embedding_cosine: float | None
    min_logits_cosine: float | None
    tolerance: float | None
    message: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody


class Probe(BaseModel):
    status: str
    models: list[str] = []


# -- search ----------------------------------------------------------------------------------------
MAX_SEARCH_K = 1000


class SearchRequest(BaseModel):
    """POST /v1/search: the nearest catalog entries to a text query or an audio clip."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, description='the model that embedded the index; "default" or none: the default')
    query: str | None = Field(None, description="text to search with (models with a text tower)")
    audio: str | None = Field(None, description="an audio clip as a data URI (data:audio/...;base64,...)")
    k: int = Field(10, ge=1, le=MAX_SEARCH_K, description="results to return")
    index: str | None = Field(None, description="index name, where the model has more than one")


class SearchResult(BaseModel):
    path: str
    score: float  # cosine similarity, 1 = the same direction


class SearchResponse(BaseModel):
    results: list[SearchResult]
    model: str
    index: str
