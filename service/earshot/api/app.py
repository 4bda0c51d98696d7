"""The FastAPI app: `create_app(settings)`; its lifespan starts the engine and closes it.

Loading runs in the background, so /healthz answers at once and /readyz turns 200 when every
bundle is loaded and warmed up.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

from fastapi import FastAPI

from earshot import __version__
from earshot.api import errors
from earshot.api.lifecycle import Lifecycle
from earshot.api.middleware import ServiceMiddleware
from earshot.api.routes import embed, openai, probes, search, stream
from earshot.engine.engine import BundleReference
from earshot.settings import Settings


def create_app(settings: Settings | None = None, bundles: Sequence[BundleReference] | None = None) -> FastAPI:
    """The service app. `bundles` overrides settings.bundles (None: resolve them from the settings)."""
    settings = settings if settings is not None else Settings()
    lifecycle = Lifecycle(settings, bundles)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        starting = asyncio.create_task(lifecycle.start(), name="earshot-startup")
        try:
            yield
        finally:
            if not starting.done():
                starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
            await lifecycle.close()

    app = FastAPI(
        title="earshot",
        version=__version__,
        description="Audio embeddings and tags over HTTP, from ONNX model bundles.",
        lifespan=lifespan,
    )
    app.state.lifecycle = lifecycle
    errors.install(app)
    app.include_router(embed.router)
    app.include_router(openai.router)
    app.include_router(search.router)
    app.include_router(stream.router)
    app.include_router(probes.router)
    app.add_middleware(ServiceMiddleware, lifecycle=lifecycle)
    return app
