"""POST /v1/search: the catalog entries nearest to a text query or an audio clip (earshot serve --index)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from earshot.api import schemas
from earshot.api.deps import Authenticated, ServingDep
from earshot.api.disconnect import unless_disconnected

router = APIRouter(prefix="/v1", tags=["search"], dependencies=[Authenticated])

_ERRORS_DOC: dict[int | str, dict[str, Any]] = {
    status: {"model": schemas.ErrorResponse}
    for status in (400, 401, 404, 413, 415, 422, 429, 503, 504)
}


@router.post("/search", response_model=schemas.SearchResponse, responses=_ERRORS_DOC)
async def search(request: Request, body: schemas.SearchRequest, serving: ServingDep) -> schemas.SearchResponse:
    """The k paths of an index whose embeddings are nearest (cosine) to the query's, best first."""
    request.state.model = serving.resolve(body.model)
    return await unless_disconnected(request, serving.search(body))
