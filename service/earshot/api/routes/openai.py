"""OpenAI-style endpoints: POST /v1/embeddings (base64 data-URI audio), GET /v1/models."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from earshot.api import schemas
from earshot.api.deps import Authenticated, ServingDep
from earshot.api.disconnect import unless_disconnected

router = APIRouter(prefix="/v1", tags=["openai"], dependencies=[Authenticated])

_ERRORS_DOC: dict[int | str, dict[str, Any]] = {
    status: {"model": schemas.ErrorResponse}
    for status in (400, 401, 404, 413, 415, 422, 429, 503, 504)
}


@router.post("/embeddings", response_model=schemas.EmbeddingsResponse, responses=_ERRORS_DOC)
async def embeddings(
    request: Request, response: Response, body: schemas.EmbeddingsRequest, serving: ServingDep
) -> schemas.EmbeddingsResponse:
    """Embeddings of one or more audio files sent as `data:audio/...;base64,...` strings."""
    request.state.model = serving.resolve(body.model)
    result, timing = await unless_disconnected(request, serving.embeddings(body))
    response.headers.update(timing.headers())
    return result


@router.get("/models", response_model=schemas.ModelList)
async def models(serving: ServingDep) -> schemas.ModelList:
    """The models this server serves (OpenAI-style list), the default one marked."""
    return serving.models()
