"""Probes and metrics: /healthz (alive), /readyz (loaded, warmed up, not draining), /metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response

from earshot import metrics
from earshot.api import schemas
from earshot.api.deps import LifecycleDep
from earshot.api.errors import error_response
from earshot.api.lifecycle import State
from earshot.engine.errors import Draining, NotReady, SelfTestFailedError

router = APIRouter(tags=["probes"])


@router.get("/healthz", response_model=schemas.Probe, responses={503: {"model": schemas.ErrorResponse}})
async def healthz(lifecycle: LifecycleDep) -> Response | schemas.Probe:
    """Alive: 200 unless loading the models failed."""
    if not lifecycle.alive:
        return error_response(NotReady(f"startup failed: {lifecycle.failure}"))
    return schemas.Probe(status=lifecycle.state.value)


@router.get("/readyz", response_model=schemas.Probe, responses={503: {"model": schemas.ErrorResponse}})
async def readyz(lifecycle: LifecycleDep) -> Response | schemas.Probe:
    """Ready: 200 once every model is loaded and warmed up; 503 while starting or draining."""
    if lifecycle.state is State.DRAINING or lifecycle.state is State.STOPPED:
        return error_response(Draining("the server is shutting down"))
    if lifecycle.state is State.SELF_TEST_FAILED:
        return error_response(SelfTestFailedError(f"a model failed its self-test: {lifecycle.failure}"))
    if not lifecycle.ready:
        reason = f"startup failed: {lifecycle.failure}" if lifecycle.failure else "loading and warming up the models"
        return error_response(NotReady(reason))
    assert lifecycle.engine is not None
    return schemas.Probe(status="ready", models=lifecycle.engine.models)


@router.get("/metrics", response_class=Response)
async def prometheus_metrics() -> Response:
    """Prometheus text format; every name starts with earshot_."""
    body, content_type = metrics.exposition()
    return Response(content=body, media_type=content_type)
