"""Dependencies of the routes, as named aliases: settings, the serving layer, the API-key check."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from earshot.api.lifecycle import Lifecycle
from earshot.api.serving import Serving
from earshot.engine.errors import NotReady, Unauthorized
from earshot.settings import Settings


def get_lifecycle(request: Request) -> Lifecycle:
    return request.app.state.lifecycle


def get_settings(request: Request) -> Settings:
    return request.app.state.lifecycle.settings


def get_serving(lifecycle: LifecycleDep) -> Serving:
    if lifecycle.engine is None or not lifecycle.engine.ready:
        raise NotReady("the server is still loading its models")
    return Serving(lifecycle.engine, lifecycle.indexes)


LifecycleDep = Annotated[Lifecycle, Depends(get_lifecycle)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
ServingDep = Annotated[Serving, Depends(get_serving)]


def require_api_key(request: Request, settings: SettingsDep) -> None:
    """With API keys configured, every request must carry `Authorization: Bearer <key>`."""
    if not settings.api_keys:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    given = token.strip().encode()
    if scheme.lower() != "bearer" or not any(hmac.compare_digest(given, key.encode()) for key in settings.api_keys):
        raise Unauthorized("a valid API key is required: send Authorization: Bearer <key>")


Authenticated = Depends(require_api_key)
