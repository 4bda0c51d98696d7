"""One batcher per model: gathers windows from every in-flight request into shared batches.

One owner task drains the queue (cf. text-embeddings-inference's queue.rs). A batch closes when it
holds `max_batch_windows` windows, or when its oldest window has waited `max_wait_s`; it runs in
a worker thread while the owner goes on collecting the next one. Admission is cheap and immediate:
a request is admitted while fewer than `max_queued_windows` windows wait (then all its windows are
queued), otherwise it gets `QueueFull` at once. A request whose deadline passes, or whose caller
went away (its task was cancelled), leaves the queue: its windows not yet in a batch are dropped.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from earshot import bundle as bundle_format
from earshot import metrics
from earshot.engine.errors import DeadlineExceeded, Draining, InferenceFailed, QueueFull
from earshot.engine.runner import BatchOutput, Runner
from earshot.engine.windows import Windows

log = logging.getLogger(__name__)

RETRY_AFTER_MAX_S = 60  # the longest Retry-After we advise
THROUGHPUT_SMOOTHING = 0.2  # weight of the newest batch in the windows/s estimate


@dataclass(frozen=True)
class BatcherConfig:
    max_batch_windows: int
    max_wait_s: float
    max_queued_windows: int
    runner_threads: int


@dataclass(frozen=True)
class JobResult:
    embedding: np.ndarray  # (n_windows, embedding_dim) float32
    logits: np.ndarray | None  # (n_windows, num_labels) float32
    queue_time_s: float  # admission until its first window ran
    inference_time_s: float  # start of its first batch until the end of its last
    frames: np.ndarray | None = None  # (n_windows, n_frames, frame_dim) float32, where the graph has frames


@dataclass(eq=False)
class _Job:
    windows: Windows
    future: asyncio.Future[JobResult]
    admitted_at: float  # loop time
    embedding: np.ndarray  # (n_windows, embedding_dim), filled batch by batch
    logits: np.ndarray | None  # (n_windows, num_labels)
    frames: np.ndarray | None = None  # (n_windows, n_frames, frame_dim)
    taken: int = 0  # windows handed to a batch so far (FIFO, from the first)
    finished: int = 0  # windows whose outputs are in
    first_start: float | None = None
    last_end: float | None = None
    abandoned: bool = False

    @property
    def size(self) -> int:
        return len(self.windows)


@dataclass(frozen=True)
class _Slice:
    job: _Job
    start: int
    stop: int


@dataclass
class _Stats:
    windows_per_s: float = 0.0
    batches: int = 0
    windows: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: collections.defaultdict(int))


class Batcher:
    def __init__(self, name: str, runner: Runner, config: BatcherConfig) -> None:
        self.name = name
        self.runner = runner
        self.config = config
        self.stats = _Stats()
        self._jobs: collections.deque[_Job] = collections.deque()  # FIFO; only the head is partly taken
        self._pending: set[_Job] = set()  # admitted and not yet answered
        self._queued = 0  # windows admitted and not yet in a batch
        self._running = 0  # batches in worker threads
        self._accepting = False
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._slots = asyncio.Semaphore(config.runner_threads)
        self._executor = ThreadPoolExecutor(config.runner_threads, thread_name_prefix=f"earshot-run-{name}")
        self._owner: asyncio.Task[None] | None = None
        self._batch_tasks: set[asyncio.Task[None]] = set()
        self._queued_gauge = metrics.QUEUED_WINDOWS.labels(model=name)
        self._queued_gauge.set(0)

    # -- life cycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        self._accepting = True
        self._owner = asyncio.get_running_loop().create_task(self._own(), name=f"earshot-batcher-{self.name}")

    def stop_admitting(self) -> None:
        self._accepting = False

    async def wait_idle(self) -> None:
        """Until every admitted request is answered and no batch runs."""
        await self._idle.wait()

    async def close(self) -> None:
        """Stop at once: refuse what is queued, let running batches end, free the threads."""
        self._accepting = False
        for job in list(self._pending):
            self._abandon(job, "shutdown")
            if not job.future.done():
                job.future.set_exception(Draining(f"model {self.name} is shutting down"))
        if self._owner is not None:
            self._owner.cancel()
            await asyncio.gather(self._owner, return_exceptions=True)
        if self._batch_tasks:
            await asyncio.gather(*self._batch_tasks, return_exceptions=True)
        self._executor.shutdown(wait=True)

    @property
    def queued_windows(self) -> int:
        return self._queued

    @property
    def pending_requests(self) -> int:
        return len(self._pending)

    # -- callers ------------------------------------------------------------------------------------
    async def submit(self, windows: Windows, timeout_s: float) -> JobResult:
        """Queue a request's windows and wait for their outputs (or for the deadline)."""
        if not self._accepting:
            metrics.REJECTED.labels(model=self.name, reason="draining").inc()
            raise Draining(f"model {self.name} is not taking new requests (shutting down)")
        if self._queued >= self.config.max_queued_windows:
            metrics.REJECTED.labels(model=self.name, reason="queue_full").inc()
            raise QueueFull(
                f"model {self.name} has {self._queued} windows queued (limit {self.config.max_queued_windows})",
                retry_after_s=self._retry_after_s(),
            )
        if timeout_s <= 0:
            raise DeadlineExceeded("the request's deadline passed before it was queued")
        loop = asyncio.get_running_loop()
        manifest = self.runner.bundle.manifest
        job = _Job(
            windows=windows,
            future=loop.create_future(),
            admitted_at=loop.time(),
            embedding=np.empty((len(windows), manifest.embedding_dim), dtype=np.float32),
            logits=np.empty((len(windows), manifest.num_labels), dtype=np.float32) if manifest.has_logits else None,
            frames=self._frames_buffer(len(windows)),
        )
        self._jobs.append(job)
        self._pending.add(job)
        self._idle.clear()
        self._set_queued(self._queued + job.size)
        self._wake.set()
        try:
            return await asyncio.wait_for(asyncio.shield(job.future), timeout_s)
        except TimeoutError:
            self._abandon(job, "deadline")
            raise DeadlineExceeded(f"the request did not finish within {timeout_s:.3g} s") from None
        except asyncio.CancelledError:
            self._abandon(job, "cancelled")
            raise

    def _frames_buffer(self, n_windows: int) -> np.ndarray | None:
        manifest = self.runner.bundle.manifest
        if manifest.frame_grid is None:
            return None
        spec = next(o for o in manifest.outputs if o.name == bundle_format.FRAMES_OUTPUT)
        return np.empty((n_windows, manifest.frame_grid.count, int(spec.shape[-1])), dtype=np.float32)

    def _abandon(self, job: _Job, reason: str) -> None:
        if job.abandoned:
            return
        job.abandoned = True
        dropped = job.size - job.taken
        if dropped:
            job.taken = job.size
            self._set_queued(self._queued - dropped)
            self.stats.dropped[reason] += dropped
            metrics.DROPPED_WINDOWS.labels(model=self.name, reason=reason).inc(dropped)
        self._forget(job)
        self._wake.set()

    def _forget(self, job: _Job) -> None:
        self._pending.discard(job)
        self._update_idle()

    def _update_idle(self) -> None:
        if not self._pending and self._running == 0:
            self._idle.set()

    def _set_queued(self, value: int) -> None:
        self._queued = value
        self._queued_gauge.set(value)

    def _retry_after_s(self) -> int:
        if self.stats.windows_per_s <= 0:
            return 1
        return max(1, min(RETRY_AFTER_MAX_S, math.ceil(self._queued / self.stats.windows_per_s)))

    # -- the owner ----------------------------------------------------------------------------------
    async def _own(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._slots.acquire()
            try:
                batch = await self._next_batch(loop)
            except BaseException:
                self._slots.release()
                raise
            self._running += 1
            task = loop.create_task(self._run(batch))
            self._batch_tasks.add(task)
            task.add_done_callback(self._batch_tasks.discard)

    async def _next_batch(self, loop: asyncio.AbstractEventLoop) -> list[_Slice]:
        while True:
            if self._queued == 0:
                self._wake.clear()
                await self._wake.wait()
                continue
            head = self._head()
            wait_s = head.admitted_at + self.config.max_wait_s - loop.time()
            if self._queued >= self.config.max_batch_windows or wait_s <= 0:
                return self._take()
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), wait_s)
            except TimeoutError:
                pass

    def _head(self) -> _Job:
        while self._jobs[0].taken >= self._jobs[0].size:
            self._jobs.popleft()
        return self._jobs[0]

    def _take(self) -> list[_Slice]:
        room = self.config.max_batch_windows
        batch: list[_Slice] = []
        while room and self._queued:
            job = self._head()
            count = min(room, job.size - job.taken)
            batch.append(_Slice(job, job.taken, job.taken + count))
            job.taken += count
            room -= count
            self._set_queued(self._queued - count)
        return batch

    async def _run(self, batch: list[_Slice]) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        for piece in batch:
            if piece.job.first_start is None:
                piece.job.first_start = started
                metrics.QUEUE_WAIT.labels(model=self.name).observe(started - piece.job.admitted_at)
        try:
            output, seconds = await loop.run_in_executor(self._executor, self._compute, batch)
        except Exception as error:  # a failing model must answer its callers, not hang them
            log.exception("model %s failed on a batch of %d windows", self.name, _windows_in(batch))
            for piece in batch:
                if not piece.job.abandoned and not piece.job.future.done():  # someone still waits for it
                    piece.job.future.set_exception(InferenceFailed(f"model {self.name} failed: {error}"))
                self._abandon(piece.job, "failed")
        else:
            self._deliver(batch, output, seconds, loop.time())
        finally:
            self._running -= 1
            self._slots.release()
            self._update_idle()

    def _compute(self, batch: list[_Slice]) -> tuple[BatchOutput, float]:
        """In a worker thread: gather the windows (copying only these rows), run the model."""
        waveform = np.concatenate([p.job.windows.samples[p.start : p.stop] for p in batch])  # (B, input_samples)
        num_samples = np.concatenate([p.job.windows.num_samples[p.start : p.stop] for p in batch])  # (B,)
        began = time.perf_counter()
        output = self.runner.run(waveform, num_samples)
        return output, time.perf_counter() - began

    def _deliver(self, batch: list[_Slice], output: BatchOutput, seconds: float, ended: float) -> None:
        size = _windows_in(batch)
        metrics.BATCH_SIZE.labels(model=self.name).observe(size)
        metrics.INFERENCE_TIME.labels(model=self.name).observe(seconds)
        metrics.WINDOWS.labels(model=self.name).inc(size)
        self.stats.batches += 1
        self.stats.windows += size
        rate = size / max(seconds, 1e-6) * self.config.runner_threads
        if self.stats.windows_per_s <= 0:
            self.stats.windows_per_s = rate
        else:
            self.stats.windows_per_s += THROUGHPUT_SMOOTHING * (rate - self.stats.windows_per_s)
        offset = 0
        for piece in batch:
            job, count = piece.job, piece.stop - piece.start
            rows = slice(offset, offset + count)
            offset += count
            if job.abandoned or job.future.done():
                continue
            job.embedding[piece.start : piece.stop] = output.embedding[rows]
            if job.logits is not None and output.logits is not None:
                job.logits[piece.start : piece.stop] = output.logits[rows]
            if job.frames is not None and output.frames is not None:
                job.frames[piece.start : piece.stop] = output.frames[rows]
            job.finished += count
            job.last_end = ended
            if job.finished == job.size:
                first = job.first_start if job.first_start is not None else ended
                job.future.set_result(
                    JobResult(
                        embedding=job.embedding,
                        logits=job.logits,
                        queue_time_s=first - job.admitted_at,
                        inference_time_s=ended - first,
                        frames=job.frames,
                    )
                )
                self._forget(job)


def _windows_in(batch: list[_Slice]) -> int:
    return sum(p.stop - p.start for p in batch)
