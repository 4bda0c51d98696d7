"""POST /v1/embed: one audio file in the body (raw or multipart field `file`) -> embedding and tags."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from starlette.datastructures import UploadFile

from earshot.api import schemas
from earshot.api.deps import Authenticated, ServingDep
from earshot.api.disconnect import unless_disconnected
from earshot.api.serving import OCTET_STREAM, is_audio_media_type
from earshot.engine.errors import InvalidInput, UnsupportedMediaType

router = APIRouter(prefix="/v1", tags=["embeddings"], dependencies=[Authenticated])

MULTIPART = "multipart/form-data"
FILE_FIELD = "file"

_BODY_DOC = {
    "requestBody": {
        "required": True,
        "description": f"the audio file: raw (audio/* or {OCTET_STREAM}) or multipart field `{FILE_FIELD}`",
        "content": {
            "audio/*": {"schema": {"type": "string", "format": "binary"}},
            OCTET_STREAM: {"schema": {"type": "string", "format": "binary"}},
            MULTIPART: {
                "schema": {
                    "type": "object",
                    "properties": {FILE_FIELD: {"type": "string", "format": "binary"}},
                    "required": [FILE_FIELD],
                }
            },
        },
    }
}
_ERRORS_DOC: dict[int | str, dict[str, Any]] = {
    status: {"model": schemas.ErrorResponse}
    for status in (400, 401, 404, 413, 415, 422, 429, 503, 504)
}


@router.post(
    "/embed",
    response_model=schemas.EmbedResponse,
    response_model_exclude_none=True,
    openapi_extra=_BODY_DOC,
    responses=_ERRORS_DOC,
)
async def embed(
    request: Request,
    response: Response,
    params: Annotated[schemas.EmbedParams, Query()],
    serving: ServingDep,
) -> schemas.EmbedResponse:
    """Embed one audio file: clip embedding, top-k tags, optionally per-window results."""
    request.state.model = serving.resolve(params.model)  # unknown model: 404 before reading the body
    data = await _read_audio(request)
    result, timing = await unless_disconnected(request, serving.embed(data, params))
    response.headers.update(timing.headers())
    return result


async def _read_audio(request: Request) -> bytes:
    media_type = request.headers.get("content-type", OCTET_STREAM).split(";")[0].strip().lower()
    if media_type == MULTIPART:
        async with request.form(max_files=1, max_fields=8) as form:
            upload = form.get(FILE_FIELD)
            if not isinstance(upload, UploadFile):
                raise InvalidInput(f"the multipart body has no file field {FILE_FIELD!r}")
            return await upload.read()
    if not is_audio_media_type(media_type):
        raise UnsupportedMediaType(
            f"content type {media_type!r} is not audio/*, {OCTET_STREAM} or {MULTIPART} with a field {FILE_FIELD!r}"
        )
    return await request.body()
