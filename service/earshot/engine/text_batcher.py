"""One text batcher per model with a text tower: texts from every request, in token-budgeted batches.

The window batcher's rules (batcher.py), for token ids: one owner task; a batch closes when its
padded size (rows x longest row) would pass `max_batch_tokens`, or when its oldest text has
waited `max_wait_s`; it runs in a worker thread. A request is admitted while fewer than
`max_queued_texts` texts wait, else QueueFull at once; one whose deadline passes, or whose caller
went away, leaves the queue.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from earshot import metrics
from earshot.engine.errors import DeadlineExceeded, Draining, InferenceFailed, QueueFull
from earshot.engine.text import TextEncoder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TextBatcherConfig:
    max_batch_tokens: int  # padded tokens per batch: rows x the longest row
    max_wait_s: float
    max_queued_texts: int


@dataclass(eq=False)
class _TextJob:
    token_ids: list[list[int]]
    future: asyncio.Future[np.ndarray]
    admitted_at: float  # loop time
    embedding: np.ndarray  # (n_texts, embedding_dim), filled batch by batch
    taken: int = 0
    finished: int = 0
    abandoned: bool = False


@dataclass(frozen=True)
class _Piece:
    job: _TextJob
    start: int
    stop: int


class TextBatcher:
    def __init__(self, name: str, encoder: TextEncoder, config: TextBatcherConfig) -> None:
        self.name = name
        self.encoder = encoder
        self.config = config
        self._jobs: collections.deque[_TextJob] = collections.deque()
        self._pending: set[_TextJob] = set()
        self._queued = 0
        self._accepting = False
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"earshot-text-{name}")
        self._owner: asyncio.Task[None] | None = None
        self._gauge = metrics.QUEUED_TEXTS.labels(model=name)
        self._gauge.set(0)

    def start(self) -> None:
        self._accepting = True
        self._owner = asyncio.get_running_loop().create_task(self._own(), name=f"earshot-text-{self.name}")

    def stop_admitting(self) -> None:
        self._accepting = False

    async def wait_idle(self) -> None:
        while self._pending:
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        self._accepting = False
        for job in list(self._pending):
            self._abandon(job)
            if not job.future.done():
                job.future.set_exception(Draining(f"model {self.name} is shutting down"))
        if self._owner is not None:
            self._owner.cancel()
            await asyncio.gather(self._owner, return_exceptions=True)
        self._executor.shutdown(wait=True)

    async def submit(self, token_ids: list[list[int]], timeout_s: float) -> np.ndarray:
        """Queue a request's token id lists; (n, embedding_dim) float32 once all have run."""
        if not self._accepting:
            raise Draining(f"model {self.name} is not taking new requests (shutting down)")
        if self._queued + len(token_ids) > self.config.max_queued_texts and self._queued:
            metrics.REJECTED.labels(model=self.name, reason="text_queue_full").inc()
            raise QueueFull(
                f"model {self.name} has {self._queued} texts queued (limit {self.config.max_queued_texts})",
                retry_after_s=1,
            )
        loop = asyncio.get_running_loop()
        job = _TextJob(
            token_ids=token_ids,
            future=loop.create_future(),
            admitted_at=loop.time(),
            embedding=np.empty((len(token_ids), self.encoder.embedding_dim), dtype=np.float32),
        )
        self._jobs.append(job)
        self._pending.add(job)
        self._set_queued(self._queued + len(token_ids))
        self._wake.set()
        try:
            return await asyncio.wait_for(asyncio.shield(job.future), timeout_s)
        except TimeoutError:
            self._abandon(job)
            raise DeadlineExceeded(f"the texts were not embedded within {timeout_s:.3g} s") from None
        except asyncio.CancelledError:
            self._abandon(job)
            raise

    def _abandon(self, job: _TextJob) -> None:
        if job.abandoned:
            return
        job.abandoned = True
        self._set_queued(self._queued - (len(job.token_ids) - job.taken))
        job.taken = len(job.token_ids)
        self._pending.discard(job)
        self._wake.set()

    def _set_queued(self, value: int) -> None:
        self._queued = value
        self._gauge.set(value)

    async def _own(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch(loop)
            await self._run(batch, loop)

    async def _next_batch(self, loop: asyncio.AbstractEventLoop) -> list[_Piece]:
        while True:
            while self._jobs and self._jobs[0].taken >= len(self._jobs[0].token_ids):
                self._jobs.popleft()
            if not self._jobs:
                self._wake.clear()
                await self._wake.wait()
                continue
            wait_s = self._jobs[0].admitted_at + self.config.max_wait_s - loop.time()
            if wait_s <= 0 or self._budget_filled():
                return self._take()
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), wait_s)
            except TimeoutError:
                pass

    def _queued_lengths(self):
        for job in self._jobs:
            for ids in job.token_ids[job.taken :]:
                yield len(ids)

    def _budget_filled(self) -> bool:
        rows, longest = 0, 0
        for length in self._queued_lengths():
            rows, longest = rows + 1, max(longest, length)
            if rows * longest >= self.config.max_batch_tokens:
                return True
        return False

    def _take(self) -> list[_Piece]:
        """FIFO texts while rows x longest stays within the budget (always at least one)."""
        batch: list[_Piece] = []
        rows, longest = 0, 0
        for job in self._jobs:
            start = job.taken
            while job.taken < len(job.token_ids):
                length = len(job.token_ids[job.taken])
                if rows and (rows + 1) * max(longest, length) > self.config.max_batch_tokens:
                    break
                rows, longest = rows + 1, max(longest, length)
                job.taken += 1
            if job.taken > start:
                batch.append(_Piece(job, start, job.taken))
            if job.taken < len(job.token_ids):
                break
        self._set_queued(self._queued - rows)
        return batch

    async def _run(self, batch: list[_Piece], loop: asyncio.AbstractEventLoop) -> None:
        token_ids = [ids for piece in batch for ids in piece.job.token_ids[piece.start : piece.stop]]
        began = time.perf_counter()
        try:
            embedding = await loop.run_in_executor(self._executor, self.encoder.run, token_ids)
        except Exception as error:
            log.exception("model %s: the text tower failed on a batch of %d texts", self.name, len(token_ids))
            for piece in batch:
                if not piece.job.future.done():
                    piece.job.future.set_exception(InferenceFailed(f"model {self.name} text tower failed: {error}"))
                self._abandon(piece.job)
            return
        metrics.TEXT_INFERENCE_TIME.labels(model=self.name).observe(time.perf_counter() - began)
        metrics.TEXT_BATCH_TOKENS.labels(model=self.name).observe(len(token_ids) * max(map(len, token_ids)))
        metrics.TEXTS.labels(model=self.name).inc(len(token_ids))
        offset = 0
        for piece in batch:
            job, count = piece.job, piece.stop - piece.start
            rows = embedding[offset : offset + count]
            offset += count
            if job.abandoned or job.future.done():
                continue
            job.embedding[piece.start : piece.stop] = rows
            job.finished += count
            if job.finished == len(job.token_ids):
                job.future.set_result(job.embedding)
                self._pending.discard(job)
