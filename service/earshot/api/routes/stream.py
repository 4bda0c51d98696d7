"""GET /v1/stream: a WebSocket of live audio in, one result per window out (api/streaming.py).

Refused at once (accepted, one `{"event": "error", "error": {"code", "message"}}` message, then the
close 4000 + the HTTP status: a browser's WebSocket can read that, not an HTTP denial's body): a
missing or wrong API key (4401), a server not ready or draining (4503), more open streams than
`max_streams` (4429). API keys come as
`Authorization: Bearer <key>` or, for browsers (which cannot set headers on a WebSocket), `?api_key=`.
"""

from __future__ import annotations

import hmac

from fastapi import APIRouter, WebSocket

from earshot import metrics
from earshot.api.streaming import StreamSession, close_code
from earshot.engine.errors import NotReady, ServiceError, Unauthorized

router = APIRouter(prefix="/v1", tags=["streams"])


class TooManyStreams(ServiceError):
    code = "too_many_streams"


@router.websocket("/stream")
async def stream(websocket: WebSocket) -> None:
    lifecycle = websocket.app.state.lifecycle
    settings = lifecycle.settings
    refusal = _refusal(websocket, lifecycle)
    if refusal is not None:
        await _refuse(websocket, refusal)
        return
    await websocket.accept()
    session = StreamSession(websocket, lifecycle.engine, settings)
    lifecycle.stream_opened(session)
    metrics.STREAMS_OPEN.inc()
    try:
        await session.run()
    finally:
        metrics.STREAMS_OPEN.dec()
        lifecycle.stream_closed(session)


def _refusal(websocket: WebSocket, lifecycle) -> ServiceError | None:
    settings = lifecycle.settings
    if settings.api_keys:
        scheme, _, token = websocket.headers.get("authorization", "").partition(" ")
        given = (token.strip() if scheme.lower() == "bearer" else "") or websocket.query_params.get("api_key", "")
        if not any(hmac.compare_digest(given.encode(), key.encode()) for key in settings.api_keys):
            return Unauthorized("a valid API key is required: Authorization: Bearer <key>, or ?api_key=<key>")
    if not lifecycle.ready:
        return NotReady("the server is not ready (loading, or shutting down)")
    if len(lifecycle.streams) >= settings.max_streams:
        return TooManyStreams(f"{len(lifecycle.streams)} streams are open (limit {settings.max_streams}); try again later")
    return None


async def _refuse(websocket: WebSocket, error: ServiceError) -> None:
    metrics.STREAMS.labels(code=str(close_code(error.code))).inc()
    await websocket.accept()
    await websocket.send_json({"event": "error", "error": {"code": error.code, "message": error.message}})
    await websocket.close(close_code(error.code))
