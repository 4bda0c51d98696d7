"""Request bodies for the load tests, made from the shared recordings (../shared/audio) at run time.

A "10 s clip" is real audio: the shared recordings decoded, downmixed, resampled to 16 kHz and
concatenated in turn until 10 s are filled, then cut. Each clip can be encoded as 16 kHz mono
PCM-16 WAV (cheap to decode: what a client that already holds samples would send) or as FLAC
(what a client holding files sends; decoding FLAC costs real CPU on the server). Clips start at
different points of the concatenation, so no two bodies are byte-identical.

Used by both `bench.py` (open-loop sweep) and `locustfile.py` (closed-loop users).
"""

from __future__ import annotations

import base64
import io
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
AUDIO_DIR = REPO.parent / "shared" / "audio"

SAMPLE_RATE = 16000  # Hz: every bundle we ship takes 16 kHz
SHORT_SECONDS = 1.0  # a "short clip": about one YAMNet window
CLIP_SECONDS = 10.0  # the usual request in the goals of issues 6 and 8
LONG_FILE = "long_75s_stereo_22k.flac"  # 75 s, 22.05 kHz stereo: the "long file" of the mix
FORMATS = ("wav", "flac")
MEDIA_TYPES = {"wav": "audio/wav", "flac": "audio/flac"}


@dataclass(frozen=True)
class Payload:
    name: str
    body: bytes
    media_type: str
    seconds: float  # duration of the audio, at the source's own rate

    def data_uri(self) -> str:
        """`data:audio/...;base64,...`, the input form of the OpenAI-style endpoint."""
        return f"data:{self.media_type};base64,{base64.b64encode(self.body).decode('ascii')}"


def source_files(audio_dir: Path = AUDIO_DIR) -> list[Path]:
    """The good recordings (FLAC and Ogg), sorted; the long file is left out of clip material."""
    return sorted(
        p for p in audio_dir.iterdir() if p.is_file() and p.suffix in (".flac", ".ogg") and p.name != LONG_FILE
    )


def read_mono(path: Path, rate: int = SAMPLE_RATE) -> np.ndarray:
    """(samples,) float32 at `rate`, channels averaged, resampled with soxr."""
    import soundfile as sf
    import soxr

    samples, source_rate = sf.read(path, dtype="float32", always_2d=True)  # (samples, channels)
    mono = samples.mean(axis=1)  # (samples,)
    if source_rate != rate:
        mono = soxr.resample(mono, source_rate, rate)
    return np.asarray(mono, dtype=np.float32)


def material(audio_dir: Path = AUDIO_DIR) -> np.ndarray:
    """All clip material, one long (samples,) 16 kHz waveform: the recordings back to back."""
    return np.concatenate([read_mono(path) for path in source_files(audio_dir)])


def cut_clips(count: int, seconds: float, audio_dir: Path = AUDIO_DIR) -> list[np.ndarray]:
    """`count` clips of `seconds`, each starting further along the (looped) material."""
    source = material(audio_dir)
    length = int(round(seconds * SAMPLE_RATE))
    stride = max(1, len(source) // max(count, 1))
    looped = np.tile(source, 2 + length // len(source))  # long enough to read past the end
    return [looped[i * stride : i * stride + length].copy() for i in range(count)]


def encode(waveform: np.ndarray, fmt: str, rate: int = SAMPLE_RATE) -> bytes:
    """A mono float waveform as a WAV (PCM-16) or FLAC (16-bit) file, in memory."""
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, waveform, rate, format=fmt.upper(), subtype="PCM_16")
    return buffer.getvalue()


def clips(count: int, seconds: float, fmt: str, audio_dir: Path = AUDIO_DIR) -> list[Payload]:
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    return [
        Payload(f"{seconds:g}s-{i}.{fmt}", encode(wave, fmt), MEDIA_TYPES[fmt], seconds)
        for i, wave in enumerate(cut_clips(count, seconds, audio_dir))
    ]


def long_file(audio_dir: Path = AUDIO_DIR) -> Payload:
    """The 75 s recording as it is (FLAC, 22.05 kHz stereo): the server decodes and resamples it."""
    import soundfile as sf

    path = audio_dir / LONG_FILE
    return Payload(LONG_FILE, path.read_bytes(), MEDIA_TYPES["flac"], float(sf.info(path).duration))
