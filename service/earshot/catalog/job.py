"""`earshot embed`: the catalog job on one machine.

    paths --(process pool: read, decode, resample)--> waveforms --(Engine, in process)--> rows --> Parquet

Decoding runs in worker processes, and enough files are kept in flight that the engine's batcher
always has windows to pack: inference never waits on decoding. The engine is the service's own
(the same windows, batching, pooling and bundle checks), used as a library without HTTP.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from earshot.catalog import table
from earshot.catalog.decoding import DecodedFile, decode_path, exit_with_parent
from earshot.catalog.plan import CatalogJob, Plan, plan_job
from earshot.catalog.progress import Progress, Summary
from earshot.catalog.rows import error_row, success_row
from earshot.engine.config import EngineConfig
from earshot.settings import Settings

log = logging.getLogger("earshot.embed")

FLUSH_SECONDS = 30.0
FILES_IN_FLIGHT_PER_WORKER = 4
CATALOG_DEADLINE_S = 24 * 3600.0  # an offline job has no request deadline worth the name


def run_local(job: CatalogJob, settings: Settings) -> Summary:
    plan = plan_job(job, Path(settings.cache_dir))
    engine_config = settings.engine_config(
        request_timeout_s=CATALOG_DEADLINE_S, max_queued_windows=max(settings.max_queued_windows, 1 << 20)
    )
    summary = Summary(skipped=plan.skipped, not_audio=plan.not_audio)
    log.info("%d files to embed with %s (%d already done)", len(plan.todo), plan.bundle.name, plan.skipped)
    asyncio.run(_embed_all(job, plan, engine_config, summary))
    rows = table.compact(job.out, plan.schema) if (job.out.exists() or table.parts_dir(job.out).is_dir()) else 0
    log.info("%s holds %d rows", job.out, rows)
    return summary


async def _embed_all(job: CatalogJob, plan: Plan, config: EngineConfig, summary: Summary) -> None:
    from earshot.engine import Engine

    writer = table.PartWriter(job.out, plan.schema)
    progress = Progress(len(plan.todo), summary)
    buffer: list[dict] = []
    last_flush = time.monotonic()
    sample_rate = plan.bundle.manifest.sample_rate
    in_flight = asyncio.Semaphore(job.decode_workers * FILES_IN_FLIGHT_PER_WORKER)
    context = multiprocessing.get_context("spawn")  # no fork of a process holding ONNX Runtime threads
    loop = asyncio.get_running_loop()

    async def one_file(path: str) -> None:
        nonlocal last_flush
        try:
            decoded = await loop.run_in_executor(pool, decode_path, path, sample_rate)
            row = await _embed_decoded(engine, plan.bundle.name, decoded, job)
            buffer.append(row)
            progress.advance(row["duration_s"], row["error"] is not None)
            if len(buffer) >= job.flush_rows or time.monotonic() - last_flush >= FLUSH_SECONDS:
                writer.write(buffer[:])
                buffer.clear()
                last_flush = time.monotonic()
        finally:
            in_flight.release()

    # the workers end themselves if this process dies without shutting the pool down (SIGKILL, OOM)
    with ProcessPoolExecutor(job.decode_workers, mp_context=context, initializer=exit_with_parent,
                             initargs=(os.getpid(),)) as pool:
        async with Engine([plan.bundle], config) as engine:
            summary.ready_seconds = summary.wall_seconds
            tasks = []
            try:
                for path in plan.todo:
                    await in_flight.acquire()
                    tasks.append(asyncio.create_task(one_file(path)))
                await asyncio.gather(*tasks)
            finally:
                writer.write(buffer)  # what finished is kept, even when interrupted
                progress.close()


async def _embed_decoded(engine, model: str, decoded: DecodedFile, job: CatalogJob) -> dict:
    from earshot.engine.errors import ServiceError

    if decoded.error is not None:
        return error_row(decoded, model, decoded.error, job.with_windows, job.with_frames, job.with_segments)
    try:
        result = await engine.embed(
            decoded.waveform, model, top_k=job.top_k, windows=job.with_windows, frames=job.with_frames,
            segments=engine.config.segment_config() if job.with_segments else None,
        )
    except ServiceError as error:
        return error_row(decoded, model, str(error), job.with_windows, job.with_frames, job.with_segments)
    windows = [(w.start_s, w.end_s, w.embedding) for w in result.windows or []]
    return success_row(
        decoded, result.model, result.embedding, result.tags, windows, job.with_windows, result.frames, job.with_frames,
        result.segments, job.with_segments,
    )
