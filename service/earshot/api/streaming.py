"""One WebSocket stream (GET /v1/stream): the protocol, between the socket and the engine.

Client -> server: first a JSON text message `StreamStart`, then binary frames of raw audio of any
size, then the text message `{"event": "end"}`. Server -> client, JSON text messages:
  {"event": "ready", "model", "sample_rate", "window_s", "hop_s"}      once the start is accepted
  {"event": "window", "index", "start_s", "end_s", "tags", "embedding"?}  one per window, in order
  {"event": "segment_start", "label", "start_s", "score"}               with "segments": true
  {"event": "segment_end", "label", "start_s", "end_s", "score"}
  {"event": "end", "windows", "duration_s", "reason"?}                  then the close (1000, or 1001 on shutdown)
  {"event": "error", "error": {"code", "message"}}                      then the close 4000 + the HTTP status
The windows are the ones a whole-file request makes (same grid, same context: StreamCutter), run
through the model's shared batcher, so streams and HTTP requests share batches.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import time
from collections.abc import MutableMapping
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.websockets import WebSocket, WebSocketDisconnect

from earshot import metrics
from earshot.api.errors import STATUS_BY_CODE, describe_validation
from earshot.engine import Engine
from earshot.engine.errors import ServiceError
from earshot.engine.pcm import PcmDecoder
from earshot.engine.stream_windows import StreamCutter
from earshot.engine.windows import Windows
from earshot.settings import Settings

log = logging.getLogger(__name__)

CLOSE_NORMAL, CLOSE_GOING_AWAY = 1000, 1001


class StreamStart(BaseModel):
    """The first message of a stream."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, description='bundle name; "default" or none: the default model')
    sample_rate: int = Field(ge=1000, le=384000, description="of the audio sent")
    encoding: Literal["pcm_s16le", "f32le"] = Field(description="raw little-endian samples, channels interleaved")
    channels: int = Field(1, ge=1, le=16)
    top_k: int | None = Field(None, ge=0, le=1000)
    embeddings: bool = Field(False, description="send each window's embedding too")
    segments: bool = Field(False, description="send segment_start / segment_end events (threshold, hysteresis)")


class StreamError(ServiceError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def close_code(code: str) -> int:
    """4000 + the HTTP status the same error gets over HTTP."""
    return 4000 + STATUS_BY_CODE.get(code, 500)


class _LiveSegments:
    """Per label: open at the threshold, close below threshold - hysteresis (no merging, no minimum
    duration: those need the future; a whole-file request applies them)."""

    def __init__(self, labels: list[str], threshold: float, hysteresis: float) -> None:
        self.labels = labels
        self.on, self.off = threshold, max(0.0, threshold - hysteresis)
        self.open: dict[int, tuple[float, list[float]]] = {}  # label index -> (start_s, scores)

    def update(self, start_s: float, scores: np.ndarray) -> list[dict[str, Any]]:
        events = []
        for index, score in enumerate(scores.tolist()):
            if index in self.open:
                if score < self.off:
                    started, kept = self.open.pop(index)
                    events.append(self._end(index, started, start_s, kept))
                else:
                    self.open[index][1].append(score)
            elif score >= self.on:
                self.open[index] = (start_s, [score])
                events.append({"event": "segment_start", "label": self.labels[index], "start_s": start_s, "score": score})
        return events

    def close_all(self, end_s: float) -> list[dict[str, Any]]:
        events = [self._end(index, started, end_s, kept) for index, (started, kept) in sorted(self.open.items())]
        self.open.clear()
        return events

    def _end(self, index: int, start_s: float, end_s: float, kept: list[float]) -> dict[str, Any]:
        return {"event": "segment_end", "label": self.labels[index], "start_s": start_s, "end_s": end_s,
                "score": float(np.mean(kept))}


class StreamSession:
    def __init__(self, websocket: WebSocket, engine: Engine, settings: Settings) -> None:
        self.websocket = websocket
        self.engine = engine
        self.settings = settings
        self.shutdown = asyncio.Event()  # set by the lifecycle on SIGTERM: finish and close
        self._pending: collections.deque[tuple[asyncio.Task, float]] = collections.deque()
        self._sent_windows = 0
        self._answered_s = 0.0  # the audio whose windows have been answered
        self._wake = asyncio.Event()  # a batch of windows was submitted
        self.model = ""

    async def run(self) -> None:
        code = CLOSE_NORMAL
        try:
            start, decoder, cutter, live = await self._start()
            code = await self._stream(start, decoder, cutter, live)
        except StreamError as error:
            code = close_code(error.code)
            await self._send_error(error.code, error.message)
        except ServiceError as error:
            code = close_code(error.code)
            await self._send_error(error.code, error.message)
        except WebSocketDisconnect:
            code = 0  # the client left: nothing to say
        finally:
            for task, _ in self._pending:
                task.cancel()
            metrics.STREAMS.labels(code=str(code)).inc()
        if code:
            with contextlib.suppress(Exception):
                await self.websocket.close(code)

    # -- the start -----------------------------------------------------------------------------------
    async def _start(self):
        message = await self._receive()
        if message.get("text") is None:
            raise StreamError("bad_request", "the first message must be JSON text: StreamStart (model, sample_rate, encoding, ...)")
        try:
            start = StreamStart.model_validate(json.loads(message["text"]))
        except json.JSONDecodeError as error:
            raise StreamError("bad_request", f"the first message is not JSON: {error}") from error
        except ValidationError as error:
            raise StreamError("bad_request", f"bad first message: {describe_validation(error)}") from error
        self.model = self.engine.resolve(start.model)  # unknown: model_not_found -> 4404
        manifest = self.engine.bundle(self.model).manifest
        decoder = PcmDecoder(start.encoding, start.channels, start.sample_rate, manifest.sample_rate)
        cutter = StreamCutter(self.engine.window_spec(self.model))
        live = None
        if start.segments:
            if not manifest.has_logits:
                raise StreamError("invalid_input", f"model {self.model} has no tags to find segments of")
            config = self.engine.config.segment_config()
            live = _LiveSegments(self.engine.bundle(self.model).labels, config.threshold, config.hysteresis)
        await self._send({"event": "ready", "model": self.model, "sample_rate": manifest.sample_rate,
                          "window_s": manifest.window_seconds, "hop_s": manifest.hop_seconds})
        return start, decoder, cutter, live

    # -- the stream ----------------------------------------------------------------------------------
    async def _stream(self, start: StreamStart, decoder: PcmDecoder, cutter: StreamCutter, live) -> int:
        sender = asyncio.create_task(self._send_results(start, live))
        try:
            while True:
                receiving = asyncio.ensure_future(self._receive())
                stopping = asyncio.ensure_future(self.shutdown.wait())
                done, _ = await asyncio.wait({receiving, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if receiving not in done:
                    receiving.cancel()
                    await self._finish(decoder, cutter, start, sender, live, reason="the server is shutting down")
                    return CLOSE_GOING_AWAY
                stopping.cancel()
                message = receiving.result()
                if message.get("bytes") is not None:
                    seconds_before = decoder.seconds_in
                    self._submit(cutter.push(decoder.decode(message["bytes"])), start)
                    metrics.STREAM_AUDIO_SECONDS.labels(model=self.model).inc(decoder.seconds_in - seconds_before)
                    backlog = decoder.seconds_in - self._answered_s
                    if backlog > self.settings.stream_max_backlog_s:
                        raise StreamError(
                            "stream_backlog_exceeded",
                            f"{backlog:.1f} s of audio received and not yet answered (limit "
                            f"{self.settings.stream_max_backlog_s:g} s): send no faster than the model keeps up",
                        )
                    if sender.done():
                        sender.result()  # a failed window ends the stream with its error
                    continue
                try:
                    event = json.loads(message.get("text") or "")
                except json.JSONDecodeError:
                    event = None
                if event != {"event": "end"}:
                    raise StreamError("bad_request", 'after the start, send binary audio frames or {"event": "end"}')
                await self._finish(decoder, cutter, start, sender, live)
                return CLOSE_NORMAL
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender

    def _submit(self, windows: Windows | None, start: StreamStart) -> None:
        if windows is None:
            return
        call = self.engine.embed_windows(windows, self.model, top_k=start.top_k, timeout_s=self.settings.request_timeout_s)
        self._pending.append((asyncio.ensure_future(call), time.perf_counter()))
        self._wake.set()

    async def _send_results(self, start: StreamStart, live) -> None:
        """In order: each batch of windows' results as they come."""
        while True:
            while not self._pending:
                self._wake.clear()
                await self._wake.wait()
            task, arrived = self._pending[0]
            results, scores = await task
            self._pending.popleft()
            for row, window in enumerate(results):
                message: dict[str, Any] = {
                    "event": "window", "index": self._sent_windows, "start_s": window.start_s, "end_s": window.end_s,
                    "tags": [{"label": tag.label, "score": tag.score} for tag in window.tags],
                }
                if start.embeddings:
                    message["embedding"] = window.embedding.tolist()
                await self._send(message)
                self._sent_windows += 1
                self._answered_s = window.end_s
                if live is not None and scores is not None:
                    for event in live.update(window.start_s, scores[row]):
                        await self._send(event)
            metrics.STREAM_WINDOW_LATENCY.labels(model=self.model).observe(time.perf_counter() - arrived)

    async def _finish(self, decoder: PcmDecoder, cutter: StreamCutter, start: StreamStart, sender, live,
                      reason: str | None = None) -> None:
        self._submit(cutter.push(decoder.flush()), start)
        self._submit(cutter.finish(), start)
        while self._pending and not sender.done():
            await asyncio.sleep(0.002)
        if sender.done():
            sender.result()
        duration_s = cutter.received / self.engine.bundle(self.model).manifest.sample_rate
        if live is not None:
            for event in live.close_all(duration_s):
                await self._send(event)
        end: dict[str, Any] = {"event": "end", "windows": self._sent_windows, "duration_s": duration_s}
        if reason:
            end["reason"] = reason
        await self._send(end)

    # -- the socket ----------------------------------------------------------------------------------
    async def _receive(self) -> MutableMapping[str, Any]:
        try:
            message = await asyncio.wait_for(self.websocket.receive(), self.settings.stream_idle_timeout_s)
        except TimeoutError:
            raise StreamError(
                "stream_idle", f"nothing received for {self.settings.stream_idle_timeout_s:g} s; the stream is closed"
            ) from None
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        return message

    async def _send(self, message: dict[str, Any]) -> None:
        await self.websocket.send_text(json.dumps(message))

    async def _send_error(self, code: str, message: str) -> None:
        with contextlib.suppress(Exception):
            await self._send({"event": "error", "error": {"code": code, "message": message}})

