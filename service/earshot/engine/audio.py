"""Audio intake: bytes in any format libsndfile reads -> mono float32 at the model's sample rate.

WAV, FLAC, Ogg Vorbis/Opus, MP3 and AIFF decode through soundfile (libsndfile); channels are
averaged; other sample rates are converted with soxr. Limits are checked from the header before
the samples are decoded. Everything here is blocking: callers run it in a worker thread.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import soundfile
import soxr

from earshot.engine.errors import (
    AudioTooLong,
    BodyTooLarge,
    EmptyAudio,
    NonFiniteAudio,
    UndecodableAudio,
)

RESAMPLE_QUALITY = "HQ"  # soxr's high quality: flat to 0.98 of the lower Nyquist, >100 dB stop band


@dataclass(frozen=True)
class AudioLimits:
    max_bytes: int
    max_seconds: float


@dataclass(frozen=True)
class SourceInfo:
    """What the header says about the input."""

    format: str  # "WAV", "FLAC", "OGG", "MP3", "AIFF", ...
    subtype: str  # "PCM_16", "VORBIS", "OPUS", ...
    sample_rate: int
    channels: int
    frames: int

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate


@dataclass(frozen=True)
class Audio:
    waveform: np.ndarray  # (samples,) float32, mono, at sample_rate
    sample_rate: int
    source: SourceInfo

    @property
    def duration_s(self) -> float:
        return self.waveform.shape[0] / self.sample_rate


def decode(data: bytes, sample_rate: int, limits: AudioLimits) -> Audio:
    """Decode `data` to mono float32 at `sample_rate`, refusing what cannot or must not be served."""
    if len(data) > limits.max_bytes:
        raise BodyTooLarge(f"audio is {len(data)} bytes; the limit is {limits.max_bytes}")
    if not data:
        raise EmptyAudio("the audio is empty (0 bytes)")
    try:
        with soundfile.SoundFile(io.BytesIO(data)) as handle:
            info = SourceInfo(
                format=handle.format,
                subtype=handle.subtype,
                sample_rate=handle.samplerate,
                channels=handle.channels,
                frames=handle.frames,
            )
            _check_header(info, limits)
            samples = handle.read(dtype="float32", always_2d=True)  # (frames, channels)
    except (soundfile.LibsndfileError, soundfile.SoundFileError, RuntimeError, ValueError, EOFError) as error:
        raise UndecodableAudio(f"could not decode the audio: {_describe(error)}") from error
    if samples.shape[0] == 0:
        raise EmptyAudio(f"the {info.format} file holds no samples")
    if not np.isfinite(samples).all():
        raise NonFiniteAudio("the audio holds NaN or infinite samples")
    mono = samples.mean(axis=1, dtype=np.float32) if samples.shape[1] > 1 else samples[:, 0]  # (frames,)
    if info.sample_rate != sample_rate:
        mono = soxr.resample(mono, info.sample_rate, sample_rate, quality=RESAMPLE_QUALITY)
    waveform = np.ascontiguousarray(mono, dtype=np.float32)
    if waveform.shape[0] == 0:
        raise EmptyAudio("the audio is too short to hold one sample at the model's rate")
    return Audio(waveform=waveform, sample_rate=sample_rate, source=info)


def _check_header(info: SourceInfo, limits: AudioLimits) -> None:
    if info.sample_rate <= 0 or info.channels <= 0:
        raise UndecodableAudio(f"the header is invalid ({info.sample_rate} Hz, {info.channels} channels)")
    if info.frames == 0:
        raise EmptyAudio(f"the {info.format} file holds no samples")
    if info.frames > 0 and info.duration_s > limits.max_seconds:
        raise AudioTooLong(f"the audio lasts {info.duration_s:.1f} s; the limit is {limits.max_seconds:g} s")


def _describe(error: Exception) -> str:
    text = str(error)
    # libsndfile names the (in-memory) file object in its messages: keep only the reason.
    if ": " in text and text.startswith("Error opening"):
        text = text.split(": ", 1)[1]
    return text or type(error).__name__
