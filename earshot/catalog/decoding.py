"""Decoding in worker processes: one catalog file -> mono float32 at the bundle's rate, or an error.

Runs in a process pool (not threads) so that decoding and resampling never compete with ONNX
Runtime for the interpreter; everything here is a plain function of picklable arguments.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from earshot.service.audio import AudioLimits, decode
from earshot.service.errors import ServiceError

# A catalog file may be a long recording; this bounds one file's decoded size (6 h at 16 kHz
# float32 is 1.4 GB), so one huge file cannot exhaust a worker's memory.
MAX_FILE_SECONDS = 6 * 3600
MAX_FILE_BYTES = 4 << 30


@dataclass(frozen=True)
class DecodedFile:
    path: str
    size_bytes: int | None
    mtime_ns: int | None
    sample_rate: int | None  # of the file as found
    duration_s: float | None
    waveform: np.ndarray | None  # (samples,) float32 at the bundle's rate; None on error
    error: str | None


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
