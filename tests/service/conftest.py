"""Fixtures of the service tests: small real bundles, settings, the app behind httpx."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import httpx
import pytest

from earshot import bundle as bundle_format
from earshot.api.app import create_app
from earshot.engine.config import EngineConfig
from earshot.settings import Settings
from tests.service.small_bundles import write_slow_bundle, write_tiny_bundle


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> bundle_format.Bundle:
    return write_tiny_bundle(tmp_path_factory.mktemp("bundles") / "tiny")


@pytest.fixture(scope="session")
def slow_bundle(tmp_path_factory: pytest.TempPathFactory) -> bundle_format.Bundle:
    return write_slow_bundle(tmp_path_factory.mktemp("bundles") / "slow")


def make_settings(tmp_path: Path, **overrides: object) -> Settings:
    """Settings for tests: one ONNX Runtime thread (2 shared cores), a private cache."""
    values: dict[str, object] = {"cache_dir": tmp_path / "cache", "threads": 1, "max_wait_ms": 2.0}
    values.update(overrides)
    return Settings(**values)


def make_config(tmp_path: Path, **overrides: object) -> EngineConfig:
    """The engine's config of those settings, for tests that use the engine as a library."""
    return make_settings(tmp_path, **overrides).engine_config()


@contextlib.asynccontextmanager
async def serving(settings: Settings, bundles: Sequence[object]) -> AsyncIterator[httpx.AsyncClient]:
    """The real app with its lifespan running, ready, behind an httpx client (no sockets)."""
    app = create_app(settings, bundles)
    async with app.router.lifespan_context(app):
        lifecycle = app.state.lifecycle
        while not lifecycle.ready:
            assert lifecycle.failure is None, lifecycle.failure
            await asyncio.sleep(0.005)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://earshot", timeout=60) as client:
            client.app = app  # type: ignore[attr-defined]
            yield client
