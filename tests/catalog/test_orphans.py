"""A killed `earshot embed` leaves no decode workers behind (they watch for their parent's death)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

PROC = Path("/proc")
WORKERS = 2
COPIES = 200  # enough files that the job is still running when the test has seen its workers
START_TIMEOUT_S = 120.0  # bundle load and worker start-up on a slow, shared 2-core machine
EXIT_TIMEOUT_S = 10.0  # the workers poll for their parent's death a few times a second
POLL_S = 0.05

pytestmark = pytest.mark.skipif(not (PROC / "self" / "stat").exists(),
                                reason="finds processes through /proc, which this platform lacks")


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command name (state first, then ppid), or None once it is gone."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()  # the name, in parentheses, may hold spaces


def _alive(pid: int) -> bool:
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")  # a zombie has exited


def _decode_workers(parent: int) -> set[int]:
    """Live children of `parent` that are multiprocessing "spawn" workers (not its resource tracker)."""
    found = set()
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is None or fields[0] in ("Z", "X") or int(fields[1]) != parent:
            continue
        if _is_spawn_worker(int(entry.name)):
            found.add(int(entry.name))
    return found


def _is_spawn_worker(pid: int) -> bool:
    try:
        return b"spawn_main" in (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return False


@pytest.mark.slow
def test_decode_workers_exit_when_the_job_is_killed(tmp_path, audio_dir, yamnet_bundle):
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    for copy in range(COPIES):
        shutil.copy(audio_dir / "drum_kick.flac", catalog / f"kick-{copy:03d}.flac")
    out = tmp_path / "orphans.parquet"
    process = subprocess.Popen(
        [sys.executable, "-m", "earshot.cli", "embed", str(catalog), "--bundle", str(yamnet_bundle.path),
         "--out", str(out), "--workers", str(WORKERS)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    workers: set[int] = set()
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while len(workers) < WORKERS:
            assert process.poll() is None, "the job ended before its decode workers were seen"
            assert time.monotonic() < deadline, f"only {len(workers)} of {WORKERS} decode workers started"
            workers |= _decode_workers(process.pid)
            time.sleep(POLL_S)
        process.send_signal(signal.SIGKILL)
        process.wait()
        deadline = time.monotonic() + EXIT_TIMEOUT_S
        while (alive := {pid for pid in workers if _alive(pid)}) and time.monotonic() < deadline:
            time.sleep(POLL_S)
        assert not alive, f"decode workers {sorted(alive)} outlived their killed parent"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for pid in workers:  # never leave orphans behind, even when the test fails
            if _alive(pid) and _is_spawn_worker(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
