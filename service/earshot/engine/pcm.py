"""Raw PCM as it streams in (pcm_s16le or f32le, interleaved channels, any rate) -> mono float32 at
the model's rate, chunk by chunk, the way `audio.decode` turns a whole file into samples: int16 as
x / 32768, channels averaged in float32, soxr's HQ resampler (its streaming form gives the same
samples as resampling the whole clip at once)."""

from __future__ import annotations

import numpy as np
import soxr

from earshot.engine.audio import RESAMPLE_QUALITY
from earshot.engine.errors import InvalidInput, NonFiniteAudio

ENCODINGS: dict[str, np.dtype] = {"pcm_s16le": np.dtype("<i2"), "f32le": np.dtype("<f4")}


class PcmDecoder:
    def __init__(self, encoding: str, channels: int, sample_rate: int, target_rate: int) -> None:
        if encoding not in ENCODINGS:
            raise InvalidInput(f"encoding {encoding!r} is not one of {', '.join(ENCODINGS)}")
        self.dtype = ENCODINGS[encoding]
        self.channels = channels
        self.sample_rate = sample_rate
        self.frame_bytes = self.dtype.itemsize * channels
        self._pending = b""  # a partial frame left over from the last chunk
        self._resampler = (
            soxr.ResampleStream(sample_rate, target_rate, 1, dtype="float32", quality=RESAMPLE_QUALITY)
            if sample_rate != target_rate
            else None
        )
        self.frames_in = 0  # frames (one sample per channel) received

    @property
    def seconds_in(self) -> float:
        return self.frames_in / self.sample_rate

    def decode(self, data: bytes) -> np.ndarray:
        """The mono samples at the target rate that this chunk completes (may be empty)."""
        data = self._pending + data
        usable = len(data) - len(data) % self.frame_bytes
        self._pending = data[usable:]
        raw = np.frombuffer(data[:usable], dtype=self.dtype).reshape(-1, self.channels)  # (frames, channels)
        self.frames_in += raw.shape[0]
        samples = raw.astype(np.float32) / 32768.0 if self.dtype.kind == "i" else raw.astype(np.float32)
        if not np.isfinite(samples).all():
            raise NonFiniteAudio("the stream holds NaN or infinite samples")
        mono = samples.mean(axis=1, dtype=np.float32) if self.channels > 1 else samples[:, 0]
        if self._resampler is None:
            return np.ascontiguousarray(mono)
        return self._resampler.resample_chunk(np.ascontiguousarray(mono), last=False)

    def flush(self) -> np.ndarray:
        """The stream ended: what the resampler still holds (a trailing partial frame is dropped)."""
        self._pending = b""
        if self._resampler is None:
            return np.zeros(0, dtype=np.float32)
        return self._resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
