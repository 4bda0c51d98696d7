"""The one place that turns errors into HTTP statuses and JSON bodies `{"error": {"code", "message"}}`."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from earshot import metrics
from earshot.engine.errors import QueueFull, ServiceError, Unauthorized

log = logging.getLogger(__name__)

STATUS_BY_CODE = {
    "undecodable_audio": 400,
    "empty_audio": 400,
    "non_finite_audio": 400,
    "invalid_audio": 400,
    "bad_request": 400,
    "unauthorized": 401,
    "model_not_found": 404,
    "index_not_found": 404,
    "not_found": 404,
    "method_not_allowed": 405,
    "audio_too_long": 413,
    "stream_backlog_exceeded": 413,
    "stream_idle": 408,
    "too_many_streams": 429,
    "body_too_large": 413,
    "unsupported_media_type": 415,
    "invalid_parameters": 422,
    "invalid_input": 422,
    "no_text_tower": 422,
    "invalid_text": 422,
    "queue_full": 429,
    "client_closed_request": 499,
    "internal": 500,
    "inference_failed": 500,
    "not_ready": 503,
    "draining": 503,
    "self_test_failed": 503,
    "deadline_exceeded": 504,
}
_CODE_BY_HTTP_STATUS = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}


def error_response(error: BaseException) -> JSONResponse:
    """Any exception -> its status and JSON body (a stack trace never reaches the client)."""
    headers: dict[str, str] = {}
    if isinstance(error, ServiceError):
        code, message = error.code, error.message
        if isinstance(error, QueueFull):
            headers["Retry-After"] = str(error.retry_after_s)
        if isinstance(error, Unauthorized):
            headers["WWW-Authenticate"] = "Bearer"
    elif isinstance(error, ClientDisconnect):
        code, message = "client_closed_request", "the client went away while sending its body"
    elif isinstance(error, RequestValidationError):
        code, message = "invalid_parameters", describe_validation(error)
    elif isinstance(error, StarletteHTTPException):
        code = _CODE_BY_HTTP_STATUS.get(error.status_code, "bad_request" if error.status_code < 500 else "internal")
        message = str(error.detail)
        headers.update(error.headers or {})
        status = error.status_code
        metrics.ERRORS.labels(code=code).inc()
        return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)
    else:
        log.error("unexpected error", exc_info=error)
        code, message = "internal", "internal error"
    metrics.ERRORS.labels(code=code).inc()
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=STATUS_BY_CODE.get(code, 500), headers=headers
    )


def describe_validation(error: RequestValidationError | ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item.get("loc", ()) if p not in ("query", "body"))
        parts.append(f"{where or 'request'}: {item.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid parameters"


async def _handle(request: Request, error: Exception) -> JSONResponse:
    return error_response(error)


def install(app: FastAPI) -> None:
    for kind in (ServiceError, RequestValidationError, StarletteHTTPException, Exception):
        app.add_exception_handler(kind, _handle)
