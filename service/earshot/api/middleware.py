"""The ASGI layer under every route: admission while starting or draining, the body size limit,
the count of requests in flight (what a drain waits for), and request metrics."""

from __future__ import annotations

import time

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from earshot import metrics
from earshot.api.errors import error_response
from earshot.api.lifecycle import Lifecycle, State
from earshot.engine.errors import Draining, NotReady, SelfTestFailedError

# Paths that answer whatever the state: probes, metrics, docs.
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})


class ServiceMiddleware:
    def __init__(self, app: ASGIApp, lifecycle: Lifecycle) -> None:
        self.app = app
        self.lifecycle = lifecycle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = {"code": 500}

        async def send_and_record(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        path = scope["path"]
        try:
            if path in OPEN_PATHS:
                await self.app(scope, receive, send_and_record)
                return
            refusal = self._refusal(scope)
            if refusal is not None:
                await refusal(scope, receive, send_and_record)
                return
            self.lifecycle.request_started()
            try:
                await self.app(scope, self._limited(receive), send_and_record)
            finally:
                self.lifecycle.request_finished()
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or ("other" if path not in OPEN_PATHS else path)
            model = (scope.get("state") or {}).get("model", "")
            metrics.REQUESTS.labels(endpoint=endpoint, model=model, status=str(status["code"])).inc()
            metrics.REQUEST_LATENCY.labels(endpoint=endpoint).observe(time.perf_counter() - began)

    def _refusal(self, scope: Scope):
        state = self.lifecycle.state
        if state is State.DRAINING or state is State.STOPPED:
            return error_response(Draining("the server is shutting down; try another replica"))
        if state is State.SELF_TEST_FAILED:
            return error_response(SelfTestFailedError(f"a model failed its self-test: {self.lifecycle.failure}"))
        if not self.lifecycle.ready:
            return error_response(NotReady("the server is not ready (loading its models, or failed to)"))
        limit = self.lifecycle.settings.max_body_bytes
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                return error_response(HTTPException(413, f"the body is over the limit of {limit} bytes"))
        return None

    def _limited(self, receive: Receive) -> Receive:
        limit = self.lifecycle.settings.max_body_bytes
        seen = 0

        async def receive_within_limit() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise HTTPException(413, f"the body is over the limit of {limit} bytes")
            return message

        return receive_within_limit
