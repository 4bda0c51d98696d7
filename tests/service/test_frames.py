"""frames=true: frame features with timestamps on the model's frame grid, from a graph with a
`frames` output (the speech encoders' shape), checked against numpy's reference of that graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from earshot.engine.audio import AudioLimits, decode
from earshot.engine.windows import cut, window_spec
from tests.service.conftest import make_settings, serving
from tests.service.small_bundles import FRAME_SAMPLES, SAMPLE_RATE, frames_reference, write_frames_bundle

LONG = "long_75s_stereo_22k.flac"


@pytest.fixture(scope="module")
def framed(tmp_path_factory):
    root = tmp_path_factory.mktemp("framed")
    return write_frames_bundle(root / "framed"), write_frames_bundle(root / "overlapping", "overlapping", hop_samples=600)


def decoded(path: Path) -> np.ndarray:
    return decode(path.read_bytes(), SAMPLE_RATE, AudioLimits(max_bytes=1 << 30, max_seconds=3600)).waveform


@pytest.mark.anyio
@pytest.mark.parametrize("which", [0, 1], ids=["hop = window", "overlapping windows"])
async def test_frames_cover_the_clip_in_time_order(framed, audio_dir, tmp_path, which):
    bundle = framed[which]
    data = (audio_dir / LONG).read_bytes()
    async with serving(make_settings(tmp_path), [bundle.path]) as client:
        response = await client.post(
            f"/v1/embed?model={bundle.name}&frames=true&windows=true", content=data,
            headers={"content-type": "audio/flac"},
        )
        plain = await client.post(f"/v1/embed?model={bundle.name}", content=data, headers={"content-type": "audio/flac"})
    assert response.status_code == 200, response.text
    body = response.json()
    frames = body["frames"]
    starts = np.array([f["start_s"] for f in frames])
    ends = np.array([f["end_s"] for f in frames])
    cell = FRAME_SAMPLES / SAMPLE_RATE
    assert starts[0] == 0.0 and (np.diff(starts) > 0).all()  # monotonic
    np.testing.assert_allclose(starts[1:], ends[:-1], atol=1e-9)  # contiguous
    assert ends[-1] == pytest.approx(body["duration_s"], abs=1e-9) and body["duration_s"] > 74  # covers the clip
    np.testing.assert_allclose(np.diff(starts), cell, atol=1e-9)

    waveform = decoded(audio_dir / LONG)
    windows = cut(waveform, window_spec(bundle.manifest))
    embedding, per_window = frames_reference(np.asarray(windows.samples), windows.num_samples)
    # the frame at start t comes from the window whose hop holds t (the last window: the clip's end)
    got = np.array([f["embedding"] for f in frames], dtype=np.float32)
    index = np.rint(starts * SAMPLE_RATE).astype(int) // FRAME_SAMPLES
    hop_cells = bundle.manifest.hop_samples // FRAME_SAMPLES if bundle.manifest.hop_samples % FRAME_SAMPLES == 0 else None
    if hop_cells:
        window_of = np.minimum(index // hop_cells, len(windows) - 1)
        expected = per_window[window_of, index - window_of * hop_cells]
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    # pooled and frame outputs agree: a window's embedding is the mean of its (real) frames
    for w, window in enumerate(body["windows"]):
        real = int(np.ceil(windows.num_samples[w] / FRAME_SAMPLES))
        np.testing.assert_allclose(window["embedding"], per_window[w, :real].mean(axis=0), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(window["embedding"], embedding[w], rtol=1e-4, atol=1e-5)
    assert "frames" not in plain.json()  # only when asked for


@pytest.mark.anyio
async def test_frames_of_a_model_without_them_is_422(tiny_bundle, audio_dir, tmp_path):
    async with serving(make_settings(tmp_path), [tiny_bundle.path]) as client:
        response = await client.post(
            "/v1/embed?frames=true", content=(audio_dir / "bird_crow.ogg").read_bytes(), headers={"content-type": "audio/ogg"}
        )
    assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_input"
    assert "no frame features" in response.json()["error"]["message"]


def test_the_catalog_stores_frames(framed, tiny_bundle, audio_dir, tmp_path, capsys):
    import shutil

    import pyarrow.parquet as pq

    from earshot.cli import main

    clips = tmp_path / "clips"
    clips.mkdir()
    for name in ("speech_french.ogg", "bird_crow.ogg"):
        shutil.copy(audio_dir / name, clips / name)
    shutil.copy(audio_dir / "bad" / "random_bytes.wav", clips / "random_bytes.wav")
    out = tmp_path / "frames.parquet"
    bundle = framed[1]  # overlapping windows: each stretch once
    assert main(["embed", str(clips), "--bundle", str(bundle.path), "--out", str(out), "--frames", "--workers", "1"]) == 1
    rows = {Path(row["path"]).name: row for row in pq.read_table(out).to_pylist()}
    assert rows["random_bytes.wav"]["error"] and rows["random_bytes.wav"]["frames"] is None
    for name in ("speech_french.ogg", "bird_crow.ogg"):
        row = rows[name]
        starts = np.array([cell["start_s"] for cell in row["frames"]])
        ends = np.array([cell["end_s"] for cell in row["frames"]])
        assert starts[0] == 0 and np.allclose(starts[1:], ends[:-1]) and ends[-1] == pytest.approx(row["duration_s"])
        waveform = decoded(audio_dir / name)
        windows = cut(waveform, window_spec(bundle.manifest))
        _, per_window = frames_reference(np.asarray(windows.samples), windows.num_samples)
        np.testing.assert_allclose(row["frames"][0]["embedding"], per_window[0, 0], rtol=1e-5, atol=1e-5)
    capsys.readouterr()
    assert main(["embed", str(clips), "--bundle", str(tiny_bundle.path), "--out", str(tmp_path / "x.parquet"), "--frames"]) == 2
    assert "no frame features" in capsys.readouterr().err
