"""The server's life: starting (loading bundles), ready, draining (SIGTERM), stopped or failed.

It owns the engine of one app and counts the API requests being handled, so a drain can wait for
every admitted request to finish while new ones are refused.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from earshot import metrics
from earshot.engine import Engine
from earshot.engine.engine import BundleReference, EngineSelfTestFailed
from earshot.search.served import ServedIndexes
from earshot.settings import Settings

log = logging.getLogger(__name__)

ANSWER_LEFTOVERS_S = 2.0  # after the grace period, how long requests refused by the engine get to answer


class State(enum.Enum):
    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"
    STOPPED = "stopped"
    FAILED = "failed"
    # a bundle's outputs on its self-test probe are wrong here: the process lives (probes answer and
    # say why) but never becomes ready, since restarting on the same hardware cannot mend it
    SELF_TEST_FAILED = "self_test_failed"


class Lifecycle:
    def __init__(self, settings: Settings, bundles: Sequence[BundleReference] | None = None) -> None:
        self.settings = settings
        self._bundles = list(bundles) if bundles is not None else None
        self.engine: Engine | None = None
        self.indexes: ServedIndexes = ServedIndexes([])  # what /v1/search searches (--index)
        self.streams: set[Any] = set()  # open WebSocket streams (api.streaming.StreamSession)
        self.state = State.STARTING
        self.failure: str | None = None
        self.on_failure: Callable[[str], None] | None = None  # the server exits when startup fails
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        metrics.READY.set(0)

    # -- start and stop -----------------------------------------------------------------------------
    async def start(self) -> None:
        """Resolve, load and warm up the bundles; on failure record why (and tell the server)."""
        try:
            bundles = self._bundles
            if bundles is None:
                from earshot.api.bundles import resolve_bundles

                bundles = list(await asyncio.to_thread(resolve_bundles, self.settings))
            engine = Engine(bundles, self.settings.engine_config())
            self.engine = engine
            began = time.perf_counter()
            await engine.start()
            if self.settings.indexes:
                self.indexes = await asyncio.to_thread(
                    ServedIndexes.load, self.settings.indexes, lambda model: self._model_dim(engine, model)
                )
        except EngineSelfTestFailed as error:
            self.state = State.SELF_TEST_FAILED
            self.failure = str(error)
            log.error("not ready: %s", self.failure)
            return
        except Exception as error:  # any failure to load is fatal to a server, and must be visible
            self.state = State.FAILED
            self.failure = f"{type(error).__name__}: {error}"
            log.error("startup failed: %s", self.failure)
            if self.on_failure is not None:
                self.on_failure(self.failure)
            return
        if self.state is State.STARTING:
            self.state = State.READY
            metrics.READY.set(1)
        log.info("ready in %.2f s", time.perf_counter() - began)

    @staticmethod
    def _model_dim(engine: Engine, model: str) -> int | None:
        if model not in engine.models:
            return None
        return engine.bundle(model).manifest.embedding_dim

    async def drain(self, grace_s: float) -> bool:
        """Refuse new requests, finish admitted ones. True when everything finished within grace_s."""
        self.state = State.DRAINING
        metrics.READY.set(0)
        log.info("draining: %d request(s) in flight", self._in_flight)
        deadline = time.monotonic() + grace_s

        async def finish() -> None:
            for session in list(self.streams):  # each stream sends its last results, then closes
                session.shutdown.set()
            while self.streams:
                await asyncio.sleep(0.01)
            await self._idle.wait()
            if self.engine is not None:
                await self.engine.drain()

        try:
            await asyncio.wait_for(finish(), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            log.warning("grace period of %.1f s over with %d request(s) in flight", grace_s, self._in_flight)
            if self.engine is not None:
                await self.engine.close()  # what is still queued is answered 503 "draining"
            try:
                await asyncio.wait_for(self._idle.wait(), ANSWER_LEFTOVERS_S)
            except TimeoutError:
                pass
            return False
        log.info("drained")
        return True

    async def close(self) -> None:
        if self.state is not State.FAILED:
            self.state = State.STOPPED
        metrics.READY.set(0)
        if self.engine is not None:
            await self.engine.close()

    # -- what probes and the middleware ask ---------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self.state is State.READY and self.engine is not None and self.engine.ready

    @property
    def alive(self) -> bool:
        return self.state is not State.FAILED

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def stream_opened(self, session: Any) -> None:
        self.streams.add(session)

    def stream_closed(self, session: Any) -> None:
        self.streams.discard(session)

    def request_started(self) -> None:
        self._in_flight += 1
        self._idle.clear()
        metrics.IN_FLIGHT.set(self._in_flight)

    def request_finished(self) -> None:
        self._in_flight -= 1
        metrics.IN_FLIGHT.set(self._in_flight)
        if self._in_flight == 0:
            self._idle.set()
