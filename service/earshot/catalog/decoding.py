"""Decoding in worker processes: one catalog file -> mono float32 at the bundle's rate, or an error.

Runs in a process pool (not threads) so that decoding and resampling never compete with ONNX
Runtime for the interpreter; everything here is a plain function of picklable arguments.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

import numpy as np

from earshot.engine.audio import AudioLimits, decode
from earshot.engine.errors import ServiceError

# A catalog file may be a long recording; this bounds one file's decoded size (6 h at 16 kHz
# float32 is 1.4 GB), so one huge file cannot exhaust a worker's memory.
MAX_FILE_SECONDS = 6 * 3600
MAX_FILE_BYTES = 4 << 30

# A worker whose parent is gone (killed with SIGKILL, say) would otherwise wait on its task queue
# forever: it holds that queue's write end itself, so it never sees end-of-file.
PARENT_POLL_INTERVAL_S = 0.25
ORPHANED_EXIT_STATUS = 70  # EX_SOFTWARE: only init or a subreaper reaps it, but it names the cause


@dataclass(frozen=True)
class DecodedFile:
    path: str
    size_bytes: int | None
    mtime_ns: int | None
    sample_rate: int | None  # of the file as found
    duration_s: float | None
    waveform: np.ndarray | None  # (samples,) float32 at the bundle's rate; None on error
    error: str | None


def exit_with_parent(parent_pid: int) -> None:
    """Pool initializer: end this worker at once when the process `parent_pid` is no longer its parent.

    A dead parent's children are reparented (to init, launchd or a subreaper), so polling
    os.getppid() works on Linux and macOS alike. os._exit skips cleanup on purpose: the queues it
    would flush lead nowhere. (PR_SET_PDEATHSIG is not used: it fires when the spawning *thread*
    exits, and the pool may spawn workers from a thread other than the main one.)
    """

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_POLL_INTERVAL_S)
        os._exit(ORPHANED_EXIT_STATUS)

    if os.getppid() != parent_pid:  # the parent died before this worker got here
        os._exit(ORPHANED_EXIT_STATUS)
    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def file_identity(path: str) -> tuple[int | None, int | None]:
    """(size, mtime_ns) of a path, or (None, None) when it cannot be read."""
    try:
        status = os.stat(path)
    except OSError:
        return None, None
    return status.st_size, status.st_mtime_ns


def decode_path(path: str, sample_rate: int) -> DecodedFile:
    size_bytes, mtime_ns = file_identity(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as error:
        reason = error.strerror or type(error).__name__
        return DecodedFile(path, size_bytes, mtime_ns, None, None, None, f"cannot read the file: {reason}")
    try:
        audio = decode(data, sample_rate, AudioLimits(max_bytes=MAX_FILE_BYTES, max_seconds=MAX_FILE_SECONDS))
    except ServiceError as error:
        return DecodedFile(path, size_bytes, mtime_ns, None, None, None, str(error))
    source = audio.source
    return DecodedFile(path, size_bytes, mtime_ns, source.sample_rate, source.duration_s, audio.waveform, None)
