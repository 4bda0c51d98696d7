"""Audio intake on the real clips in ../shared/audio, and the refusals of ../shared/audio/bad."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile

from earshot.engine.audio import AudioLimits, decode
from earshot.engine.errors import (
    AudioTooLong,
    BodyTooLarge,
    EmptyAudio,
    NonFiniteAudio,
    UndecodableAudio,
)

AUDIO_DIR = Path(__file__).resolve().parents[2] / ".." / "shared" / "audio"
GOOD = sorted(p for p in AUDIO_DIR.iterdir() if p.is_file() and p.suffix != ".md")
LIMITS = AudioLimits(max_bytes=50 * 1024 * 1024, max_seconds=600.0)
RATE = 16_000

BAD_ERRORS = {
    "empty.wav": EmptyAudio,
    "header_only.wav": EmptyAudio,
    "nan_inf_float.wav": NonFiniteAudio,
    "not_audio.txt": UndecodableAudio,
    "png_named.wav": UndecodableAudio,
    "random_bytes.wav": UndecodableAudio,
    "truncated.ogg": UndecodableAudio,
}


def test_the_bad_inputs_are_all_known() -> None:
    assert sorted(p.name for p in (AUDIO_DIR / "bad").iterdir()) == sorted(BAD_ERRORS)


@pytest.mark.parametrize("path", GOOD, ids=lambda p: p.name)
def test_every_clip_decodes_to_mono_float32_at_the_model_rate(path: Path) -> None:
    header = soundfile.info(str(path))
    audio = decode(path.read_bytes(), RATE, LIMITS)
    assert audio.waveform.dtype == np.float32 and audio.waveform.ndim == 1
    assert audio.sample_rate == RATE
    assert np.isfinite(audio.waveform).all()
    assert audio.source.channels == header.channels and audio.source.sample_rate == header.samplerate
    assert audio.duration_s == pytest.approx(header.duration, abs=2 / header.samplerate + 1 / RATE)
    if "silence" not in path.name:
        assert np.abs(audio.waveform).max() > 0.01


@pytest.mark.parametrize("name", sorted(BAD_ERRORS))
def test_bad_inputs_are_refused_with_their_error(name: str) -> None:
    with pytest.raises(BAD_ERRORS[name]) as caught:
        decode((AUDIO_DIR / "bad" / name).read_bytes(), RATE, LIMITS)
    assert caught.value.message


def test_limits_are_checked_from_the_header_and_the_size() -> None:
    data = (AUDIO_DIR / "long_75s_stereo_22k.flac").read_bytes()
    with pytest.raises(AudioTooLong, match="75.0 s"):
        decode(data, RATE, AudioLimits(max_bytes=len(data), max_seconds=60.0))
    with pytest.raises(BodyTooLarge):
        decode(data, RATE, AudioLimits(max_bytes=len(data) - 1, max_seconds=600.0))


def _wav(samples: np.ndarray, rate: int) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


def test_channels_are_averaged() -> None:
    t = np.arange(8_000) / RATE
    left = np.sin(2 * np.pi * 440 * t).astype(np.float32)
    stereo = np.stack([left, 0.5 * left], axis=1)  # (frames, 2)
    audio = decode(_wav(stereo, RATE), RATE, LIMITS)
    np.testing.assert_allclose(audio.waveform, 0.75 * left, atol=1e-6)


def test_resampling_keeps_pitch_and_duration() -> None:
    rate = 44_100
    t = np.arange(rate) / rate  # 1 s
    tone = (0.5 * np.sin(2 * np.pi * 1_000 * t)).astype(np.float32)
    audio = decode(_wav(tone, rate), RATE, LIMITS)
    assert audio.waveform.shape == (RATE,)
    spectrum = np.abs(np.fft.rfft(audio.waveform))
    assert np.argmax(spectrum) * RATE / audio.waveform.shape[0] == pytest.approx(1_000, abs=1)  # 1 Hz bins
    assert np.abs(audio.waveform[1_000:-1_000]).max() == pytest.approx(0.5, abs=0.01)
