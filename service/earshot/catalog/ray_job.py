"""`earshot embed --engine ray`: the same catalog job on a Ray cluster, with Ray Data.

    paths -> map(decode + cut into windows; CPU tasks) -> map_batches(EmbedActor; an actor pool,
    one ONNX Runtime session per actor, a GPU each where the cluster has GPUs) -> rows -> Parquet

The driver writes the rows with the same part files, compaction and `--resume` as the local job,
so both engines produce the same table. `ray.init()` joins the cluster named by RAY_ADDRESS, or
starts a local Ray runtime. Needs the `ray` extra: `pip install 'earshot[ray]'`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from earshot import bundle as bundle_format
from earshot.catalog import table
from earshot.catalog.decoding import DecodedFile, decode_path
from earshot.catalog.plan import CatalogJob, plan_job
from earshot.catalog.progress import Progress, Summary
from earshot.catalog.rows import error_row, success_row
from earshot.engine.assembly import assemble_clip, run_in_batches
from earshot.engine.config import EngineConfig
from earshot.engine.self_test import open_runner
from earshot.engine.windows import cut, window_spec
from earshot.settings import Settings

log = logging.getLogger("earshot.embed")

FILES_PER_ACTOR_BATCH = 8


def run_on_ray(job: CatalogJob, settings: Settings) -> Summary:
    import ray

    plan = plan_job(job, Path(settings.cache_dir))
    summary = Summary(skipped=plan.skipped, not_audio=plan.not_audio)
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(num_cpus=None if os.environ.get("RAY_ADDRESS") else job.decode_workers, log_to_driver=False)
    gpus = int(ray.cluster_resources().get("GPU", 0))
    actors = max(1, gpus) if gpus else 1
    log.info("ray: %d files, %d embedding actor(s), %d GPU(s)", len(plan.todo), actors, gpus)
    writer = table.PartWriter(job.out, plan.schema)
    progress = Progress(len(plan.todo), summary)
    if plan.todo:
        dataset: Any = ray.data.from_items([{"path": path} for path in plan.todo])
        dataset = dataset.map(_DecodeTask(plan.bundle.manifest.sample_rate))
        dataset = dataset.map_batches(
            EmbedActor,
            fn_constructor_args=(
                str(plan.bundle.path), settings.engine_config(), job.top_k, job.with_windows, job.with_frames,
                job.with_segments,
            ),
            batch_size=FILES_PER_ACTOR_BATCH,
            batch_format="pandas",
            concurrency=actors,
            num_gpus=1 if gpus else 0,
        )
        buffer: list[dict[str, Any]] = []
        for record in dataset.iter_rows():
            row = _restore(record)
            buffer.append(row)
            progress.advance(row["duration_s"], row["error"] is not None)
            if len(buffer) >= job.flush_rows:
                writer.write(buffer)
                buffer = []
        writer.write(buffer)
    progress.close()
    if started_here:
        ray.shutdown()
    rows = table.compact(job.out, plan.schema) if (job.out.exists() or table.parts_dir(job.out).is_dir()) else 0
    log.info("%s holds %d rows", job.out, rows)
    return summary


class _DecodeTask:
    """Ray Data map: {"path"} -> the decoded file's fields (waveform as float32 bytes)."""

    def __init__(self, sample_rate: int):
        self.sample_rate = sample_rate

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        decoded = decode_path(item["path"], self.sample_rate)
        return {
            "path": decoded.path,
            "size_bytes": decoded.size_bytes,
            "mtime_ns": decoded.mtime_ns,
            "sample_rate": decoded.sample_rate,
            "duration_s": decoded.duration_s,
            "waveform": None if decoded.waveform is None else decoded.waveform.tobytes(),
            "error": decoded.error,
        }


class EmbedActor:
    """Holds one ONNX Runtime session; embeds a batch of decoded files per call."""

    def __init__(
        self, bundle_path: str, config: EngineConfig, k: int, with_windows: bool, with_frames: bool = False,
        with_segments: bool = False,
    ):
        self.bundle = bundle_format.load(bundle_path, verify=True)
        manifest = self.bundle.manifest
        # with a GPU the service's providers apply (EARSHOT_PROVIDERS=cuda,cpu); without one the
        # runner falls back to the CPU by itself. The same self-test as the engine's: an actor whose
        # outputs on the bundle's probe are wrong raises, and Ray reports the failed actor.
        self.runner, self.self_test = open_runner(self.bundle, config.runner_config(), config.self_test_on_failure)
        self.spec = window_spec(manifest)
        self.max_batch = config.max_batch_windows
        self.k = k
        self.with_windows = with_windows
        self.with_frames = with_frames
        self.segments = config.segment_config() if with_segments else None

    def __call__(self, batch):
        import pandas as pd

        rows = [self._embed_one(record) for record in batch.to_dict("records")]
        return pd.DataFrame({"row": [_flatten(row) for row in rows]})

    def _embed_one(self, record: dict[str, Any]) -> dict[str, Any]:
        waveform = None if record["waveform"] is None else np.frombuffer(record["waveform"], dtype=np.float32)
        decoded = DecodedFile(
            path=record["path"],
            size_bytes=_int_or_none(record["size_bytes"]),
            mtime_ns=_int_or_none(record["mtime_ns"]),
            sample_rate=_int_or_none(record["sample_rate"]),
            duration_s=None if _missing(record["duration_s"]) else float(record["duration_s"]),
            waveform=waveform,
            error=None if _missing(record["error"]) else record["error"],
        )
        name = self.bundle.name
        if decoded.error is not None or waveform is None:
            return error_row(
                decoded, name, decoded.error or "no audio", self.with_windows, self.with_frames, self.segments is not None
            )
        windows = cut(waveform, self.spec)
        output = run_in_batches(self.runner, windows, self.max_batch)
        clip = assemble_clip(
            self.bundle, output.embedding, output.logits, windows, self.k, self.with_windows,
            frames=output.frames if self.with_frames else None, segments=self.segments,
        )
        per_window = [(w.start_s, w.end_s, w.embedding) for w in clip.windows] if clip.windows is not None else None
        return success_row(
            decoded, name, clip.embedding, clip.tags, per_window, self.with_windows, clip.frames, self.with_frames,
            clip.segments, self.segments is not None,
        )


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def _int_or_none(value: Any) -> int | None:
    return None if _missing(value) else int(value)


# Rows cross from the actors to the driver as one opaque column, so that Arrow never has to infer
# a type for a column that is null in one batch and a list in the next.
def _flatten(row: dict[str, Any]) -> bytes:
    import pickle

    return pickle.dumps(row, protocol=pickle.HIGHEST_PROTOCOL)


def _restore(record: dict[str, Any]) -> dict[str, Any]:
    import pickle

    return pickle.loads(record["row"])

