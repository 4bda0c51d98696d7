"""Between the routes and the engine: turns API requests into engine calls and results into schemas.

Routes speak HTTP (headers, bodies, statuses); this layer speaks the engine's language (bytes,
model names, arrays) and builds the pydantic answers. Arrays become plain lists here.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from dataclasses import dataclass

import numpy as np

from earshot.api import schemas
from earshot.engine import EmbedResult, Engine, Tag
from earshot.engine.errors import InvalidInput, UnsupportedMediaType
from earshot.search.served import ServedIndexes

AUDIO_MEDIA_PREFIX = "audio/"
OCTET_STREAM = "application/octet-stream"


@dataclass(frozen=True)
class Timing:
    queue_time_ms: float
    inference_time_ms: float

    def headers(self) -> dict[str, str]:
        return {
            "x-queue-time-ms": f"{self.queue_time_ms:.3f}",
            "x-inference-time-ms": f"{self.inference_time_ms:.3f}",
        }


def is_audio_media_type(media_type: str) -> bool:
    return media_type.startswith(AUDIO_MEDIA_PREFIX) or media_type == OCTET_STREAM


class Serving:
    def __init__(self, engine: Engine, indexes: ServedIndexes | None = None) -> None:
        self.engine = engine
        self.indexes = indexes if indexes is not None else ServedIndexes([])

    def resolve(self, model: str | None) -> str:
        return self.engine.resolve(model)

    async def embed(self, data: bytes, params: schemas.EmbedParams) -> tuple[schemas.EmbedResponse, Timing]:
        result = await self.engine.embed_audio(
            data, params.model, top_k=params.top_k, windows=params.windows, labels=params.labels, prompt=params.prompt,
            frames=params.frames, segments=self.segment_config(params) if params.segments else None,
        )
        return _embed_response(result), Timing(result.queue_time_ms, result.inference_time_ms)

    def segment_config(self, params: schemas.EmbedParams):
        per_label: dict[str, float] = {}
        for item in params.label_threshold or []:
            label, colon, value = item.rpartition(":")
            try:
                per_label[label] = float(value)
            except ValueError:
                label = ""
            if not colon or not label:
                raise InvalidInput(f"label_threshold {item!r} must be label:score, e.g. Speech:0.3")
        return self.engine.config.segment_config(
            threshold=params.threshold, hysteresis=params.hysteresis, min_duration_s=params.min_duration_s,
            merge_gap_s=params.merge_gap_s, label_thresholds=per_label,
        )

    async def text_embeddings(self, request: schemas.EmbeddingsRequest) -> tuple[schemas.EmbeddingsResponse, Timing]:
        name = self.engine.resolve(request.model)
        texts = [request.input] if isinstance(request.input, str) else request.input
        result = await self.engine.embed_text(texts, name)
        data = [
            schemas.EmbeddingItem(index=index, embedding=_encode(row, request.encoding_format))
            for index, row in enumerate(result.embedding)
        ]
        usage = schemas.Usage(prompt_tokens=result.tokens, total_tokens=result.tokens)
        return schemas.EmbeddingsResponse(data=data, model=name, usage=usage), Timing(0.0, 0.0)

    async def search(self, request: schemas.SearchRequest) -> schemas.SearchResponse:
        name = self.engine.resolve(request.model)
        if (request.query is None) == (request.audio is None):
            raise InvalidInput("give exactly one of query (text) and audio (a data URI)")
        index = self.indexes.for_model(name, request.index)
        if request.query is not None:
            vector = (await self.engine.embed_text([request.query], name)).embedding[0]
        else:
            assert request.audio is not None
            vector = (await self.engine.embed_audio(decode_data_uri(request.audio, 0, "audio"), name, top_k=0)).embedding
        hits = self.indexes.search(index, vector, request.k)
        return schemas.SearchResponse(
            results=[schemas.SearchResult(path=hit.path, score=hit.score) for hit in hits], model=name, index=index.name
        )

    async def embeddings(
        self, request: schemas.EmbeddingsRequest
    ) -> tuple[schemas.EmbeddingsResponse, Timing]:
        name = self.engine.resolve(request.model)
        dimension = self.engine.bundle(name).manifest.embedding_dim
        if request.dimensions is not None and request.dimensions != dimension:
            raise InvalidInput(f"model {name} gives {dimension} dimensions, not {request.dimensions}")
        if request.modality == "text":
            return await self.text_embeddings(request)
        inputs = [request.input] if isinstance(request.input, str) else request.input
        if not inputs:
            raise InvalidInput("input is empty: give one or more audio data URIs")
        clips = [decode_data_uri(item, index) for index, item in enumerate(inputs)]
        results = await _all(self.engine.embed_audio(clip, name, top_k=0) for clip in clips)
        data = [
            schemas.EmbeddingItem(index=index, embedding=_encode(result.embedding, request.encoding_format))
            for index, result in enumerate(results)
        ]
        windows = sum(result.num_windows for result in results)
        timing = Timing(
            queue_time_ms=max(result.queue_time_ms for result in results),
            inference_time_ms=max(result.inference_time_ms for result in results),
        )
        response = schemas.EmbeddingsResponse(
            data=data, model=name, usage=schemas.Usage(prompt_tokens=windows, total_tokens=windows)
        )
        return response, timing

    def models(self) -> schemas.ModelList:
        cards = []
        for name in self.engine.models:
            summary = self.engine.bundle(name).manifest.summary()
            cards.append(
                schemas.ModelCard(
                    id=name,
                    family=summary["family"],
                    precision=summary["precision"],
                    sample_rate=summary["sample_rate"],
                    window_seconds=summary["window_seconds"],
                    hop_seconds=summary["hop_seconds"],
                    embedding_dim=summary["embedding_dim"],
                    num_labels=summary["num_labels"],
                    modalities=summary["modalities"],
                    providers=self.engine.providers(name),
                    default=name == self.engine.default_model,
                    self_test=schemas.SelfTestOut(**_self_test_fields(self.engine.self_test(name).to_json())),
                )
            )
        return schemas.ModelList(data=cards)


def _self_test_fields(result: dict) -> dict:
    return {key: value for key, value in result.items() if key in schemas.SelfTestOut.model_fields}


def decode_data_uri(item: str, index: int, field: str | None = None) -> bytes:
    """`data:audio/<type>;base64,<payload>` (or bare base64) -> the audio file's bytes.
    Errors name `field` (default: input[index])."""
    where = field or f"input[{index}]"
    payload = item
    if item.startswith("data:"):
        header, comma, payload = item[len("data:") :].partition(",")
        if not comma:
            raise InvalidInput(f"{where}: a data URI needs a comma before its payload")
        media_type, *parameters = header.split(";")
        if "base64" not in parameters:
            raise InvalidInput(f"{where}: the data URI must be base64 (data:audio/...;base64,...)")
        if media_type and not is_audio_media_type(media_type.strip().lower()):
            raise UnsupportedMediaType(f"{where}: media type {media_type!r} is not audio/* or {OCTET_STREAM}")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as error:
        raise InvalidInput(f"{where}: not valid base64 ({error}); send data:audio/...;base64,...") from error


async def _all(calls) -> list[EmbedResult]:
    """Run the calls concurrently; the first failure cancels the rest and is raised as itself."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(call) for call in calls]
    except BaseExceptionGroup as group_error:
        first = group_error.exceptions[0]
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None
    return [task.result() for task in tasks]


def _encode(embedding: np.ndarray, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(np.asarray(embedding, dtype="<f4").tobytes()).decode("ascii")
    return embedding.tolist()


def _tags(tags: list[Tag]) -> list[schemas.TagOut]:
    return [schemas.TagOut(label=tag.label, score=tag.score) for tag in tags]


def _embed_response(result: EmbedResult) -> schemas.EmbedResponse:
    windows = None
    if result.windows is not None:
        windows = [
            schemas.WindowOut(
                start_s=window.start_s, end_s=window.end_s, embedding=window.embedding.tolist(), tags=_tags(window.tags)
            )
            for window in result.windows
        ]
    frames = None
    if result.frames is not None:
        clip = result.frames
        frames = [
            schemas.FrameOut(start_s=start, end_s=end, embedding=row)
            for start, end, row in zip(clip.start_s.tolist(), clip.end_s.tolist(), clip.embedding.tolist(), strict=True)
        ]
    segments = None
    if result.segments is not None:
        segments = [
            schemas.SegmentOut(label=s.label, start_s=s.start_s, end_s=s.end_s, score=s.score) for s in result.segments
        ]
    return schemas.EmbedResponse(
        model=result.model,
        duration_s=result.duration_s,
        embedding=result.embedding.tolist(),
        tags=_tags(result.tags),
        windows=windows,
        frames=frames,
        segments=segments,
    )
