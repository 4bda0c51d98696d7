"""`serve(settings)`: the app under uvicorn, with a graceful drain on SIGTERM.

On SIGTERM the server keeps listening while /readyz turns 503 and new API requests get 503; every
admitted request is finished; then the process exits (status 0) once idle, or when
`grace_timeout_s` is over. A second SIGTERM, or SIGINT, stops at once (uvicorn's own shutdown).

    python -m earshot.api.server      # settings from EARSHOT_* variables
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from types import FrameType

import uvicorn

from earshot.api.app import create_app
from earshot.api.lifecycle import Lifecycle
from earshot.settings import Settings

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_STARTUP_FAILED = 1


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, lifecycle: Lifecycle, grace_s: float) -> None:
        super().__init__(config)
        self.lifecycle = lifecycle
        self.grace_s = grace_s
        self.exit_code = EXIT_OK
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_task: asyncio.Task[None] | None = None
        lifecycle.on_failure = self._startup_failed

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGTERM and self._loop is not None and self._drain_task is None and not self.should_exit:
            self._loop.call_soon_threadsafe(self._begin_drain)
            return
        super().handle_exit(sig, frame)

    def _begin_drain(self) -> None:
        if self._drain_task is None:
            log.info("SIGTERM: draining (grace %.1f s)", self.grace_s)
            self._drain_task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        if not await self.lifecycle.drain(self.grace_s):
            self.config.timeout_graceful_shutdown = 0  # the grace is spent: uvicorn cancels what is left
        self.should_exit = True

    def _startup_failed(self, reason: str) -> None:
        log.error("exiting: %s", reason)
        self.exit_code = EXIT_STARTUP_FAILED
        self.should_exit = True


def serve(settings: Settings) -> int:
    """Run the service until it is stopped; returns the process exit status."""
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        lifespan="on",
        timeout_graceful_shutdown=max(1, int(settings.grace_timeout_s)),
        log_level=logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower(),
    )
    server = DrainingServer(config, app.state.lifecycle, settings.grace_timeout_s)
    server.run()
    return server.exit_code


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return serve(Settings())


if __name__ == "__main__":
    raise SystemExit(main())
