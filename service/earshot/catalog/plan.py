"""What a catalog job is asked to do, and what is left of it: the one plan both engines (local, Ray) run."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from earshot import bundle as bundle_format
from earshot.catalog import table
from earshot.catalog.decoding import file_identity
from earshot.catalog.inputs import expand_inputs


@dataclass(frozen=True)
class CatalogJob:
    inputs: list[str]
    bundle: str
    out: Path
    resume: bool = False
    workers: int | None = None
    with_windows: bool = False
    with_frames: bool = False  # models with frame features (speech encoders): store them too
    with_segments: bool = False  # per-label segments (the settings' segment defaults)
    top_k: int = 5
    flush_rows: int = 256  # rows per part file; a crash loses at most these plus the files in flight

    @property
    def decode_workers(self) -> int:
        return self.workers or os.cpu_count() or 1


@dataclass(frozen=True)
class Plan:
    """What a job will write: the bundle, the table layout, and the paths still to do."""

    bundle: bundle_format.Bundle
    schema: object
    todo: list[str]
    skipped: int  # files already done (--resume)
    not_audio: list[str] = field(default_factory=list)  # files in folders skipped for their extension


def plan_job(job: CatalogJob, cache_dir: Path) -> Plan:
    # the engine (or each Ray actor) verifies the checksums when it loads the bundle
    loaded = bundle_format.load(bundle_format.resolve(job.bundle, cache_dir), verify=False)
    frame_dim = None
    if job.with_frames:
        frames = [o for o in loaded.manifest.outputs if o.name == bundle_format.FRAMES_OUTPUT]
        if not frames:
            raise bundle_format.BundleError(f"{loaded.name} has no frame features: --frames is for speech encoders")
        frame_dim = int(frames[0].shape[-1])
    if job.with_segments and not loaded.manifest.has_logits:
        raise bundle_format.BundleError(f"{loaded.name} has no tags: --segments needs a tagging model")
    schema = table.catalog_schema(loaded.manifest.embedding_dim, job.with_windows, frame_dim, job.with_segments)
    not_audio: list[str] = []
    paths = expand_inputs(job.inputs, not_audio)
    job.out.parent.mkdir(parents=True, exist_ok=True)
    if not job.resume:
        table.discard_parts(job.out)  # a fresh run: leftovers of an earlier one are not resumed
        return Plan(loaded, schema, paths, 0, not_audio)
    table.check_resumable(job.out, schema)
    done = table.done_files(job.out, loaded.name)
    todo = []
    for path in paths:
        previous = done.get(path)
        size, mtime = file_identity(path)
        if previous and not previous.failed and (previous.size_bytes, previous.mtime_ns) == (size, mtime):
            continue
        todo.append(path)
    return Plan(loaded, schema, todo, len(paths) - len(todo), not_audio)
