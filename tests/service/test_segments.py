"""Segments: per-label sound events from the window scores, unit-tested on made-up scores and run
on real clips with the default model (YAMNet) through the HTTP API."""

from __future__ import annotations

import numpy as np
import pytest

from earshot.engine.segments import SegmentConfig, cells, find_segments
from tests.service.conftest import make_settings, serving


def run(scores, config: SegmentConfig, hop: float = 1.0, duration: float | None = None):
    scores = np.asarray(scores, dtype=np.float64).reshape(len(scores), -1)
    starts = np.arange(len(scores)) * hop
    duration = len(scores) * hop if duration is None else duration
    return find_segments(scores, [f"l{i}" for i in range(scores.shape[1])], *cells(starts, hop, duration), config)


def spans(segments):
    return [(s.label, s.start_s, s.end_s) for s in segments]


def test_threshold_hysteresis_merging_and_minimum_duration():
    scores = [0.1, 0.6, 0.45, 0.35, 0.7, 0.2, 0.2, 0.9, 0.1]
    assert spans(run(scores, SegmentConfig(threshold=0.5, hysteresis=0.1))) == [
        ("l0", 1.0, 3.0), ("l0", 4.0, 5.0), ("l0", 7.0, 8.0)
    ]  # 0.45 keeps it open (>= 0.4), 0.35 closes it
    assert spans(run(scores, SegmentConfig(threshold=0.5, hysteresis=0.2))) == [("l0", 1.0, 5.0), ("l0", 7.0, 8.0)]
    assert spans(run(scores, SegmentConfig(threshold=0.5, hysteresis=0.1, merge_gap_s=1.0))) == [
        ("l0", 1.0, 5.0), ("l0", 7.0, 8.0)
    ]
    assert spans(run(scores, SegmentConfig(threshold=0.5, hysteresis=0.1, min_duration_s=1.5))) == [("l0", 1.0, 3.0)]
    merged = run(scores, SegmentConfig(threshold=0.5, hysteresis=0.1, merge_gap_s=2.0))
    assert spans(merged) == [("l0", 1.0, 8.0)]
    assert merged[0].score == pytest.approx(np.mean(scores[1:8]))


def test_segments_are_sorted_never_overlap_and_never_pass_the_end():
    rng = np.random.default_rng(0)
    scores = rng.uniform(size=(40, 5))
    found = run(scores, SegmentConfig(threshold=0.6, hysteresis=0.2, merge_gap_s=0.5), hop=0.5, duration=19.7)
    assert [(s.start_s, s.label) for s in found] == sorted((s.start_s, s.label) for s in found)
    for label in {s.label for s in found}:
        mine = [s for s in found if s.label == label]
        assert all(a.end_s < b.start_s for a, b in zip(mine, mine[1:], strict=False))
    assert max(s.end_s for s in found) <= 19.7 and min(s.start_s for s in found) >= 0
    per_label = run(scores, SegmentConfig(threshold=1.0, label_thresholds={"l2": 0.6}), hop=0.5, duration=19.7)
    assert {s.label for s in per_label} == {"l2"}
    assert SegmentConfig(threshold=1.5).validate() and SegmentConfig(min_duration_s=-1).validate()


@pytest.mark.anyio
async def test_a_speech_clip_gives_a_speech_segment(yamnet_bundle, audio_dir, tmp_path):
    data = (audio_dir / "speech_spanish_16s.ogg").read_bytes()
    async with serving(make_settings(tmp_path), [yamnet_bundle.path]) as client:
        response = await client.post(
            "/v1/embed?segments=true&min_duration_s=0.5", content=data, headers={"content-type": "audio/ogg"}
        )
        strict = await client.post(
            "/v1/embed?segments=true&threshold=0.99&label_threshold=Speech:0.3", content=data,
            headers={"content-type": "audio/ogg"},
        )
        bad = [
            await client.post(f"/v1/embed?segments=true&{query}", content=data, headers={"content-type": "audio/ogg"})
            for query in ("threshold=2", "label_threshold=Speech", "min_duration_s=-1")
        ]
    assert response.status_code == 200, response.text
    body = response.json()
    duration = body["duration_s"]
    speech = [s for s in body["segments"] if s["label"] == "Speech"]
    assert sum(s["end_s"] - s["start_s"] for s in speech) >= 0.7 * duration
    for segment in body["segments"]:
        assert 0 <= segment["start_s"] < segment["end_s"] <= duration
        assert segment["end_s"] - segment["start_s"] >= 0.5 - 1e-9
    assert {s["label"] for s in strict.json()["segments"]} <= {"Speech"}
    assert [answer.status_code for answer in bad] == [422, 422, 422]


@pytest.mark.anyio
async def test_segments_need_tags(tmp_path, audio_dir):
    from tests.service.small_bundles import write_frames_bundle

    framed = write_frames_bundle(tmp_path / "framed")
    async with serving(make_settings(tmp_path), [framed.path]) as client:
        response = await client.post(
            "/v1/embed?segments=true", content=(audio_dir / "bird_crow.ogg").read_bytes(),
            headers={"content-type": "audio/ogg"},
        )
    assert response.status_code == 422 and "no tags" in response.json()["error"]["message"]


def test_the_catalog_stores_segments(yamnet_bundle, audio_dir, tmp_path):
    import shutil

    import pyarrow.parquet as pq

    from earshot.cli import main

    clips = tmp_path / "clips"
    clips.mkdir()
    shutil.copy(audio_dir / "speech_spanish_16s.ogg", clips / "speech.ogg")
    shutil.copy(audio_dir / "bad" / "random_bytes.wav", clips / "random_bytes.wav")
    out = tmp_path / "segments.parquet"
    assert main(["embed", str(clips), "--bundle", str(yamnet_bundle.path), "--out", str(out), "--segments", "--workers", "1"]) == 1
    rows = {row["path"].rsplit("/", 1)[-1]: row for row in pq.read_table(out).to_pylist()}
    assert rows["random_bytes.wav"]["segments"] is None
    speech = [s for s in rows["speech.ogg"]["segments"] if s["label"] == "Speech"]
    assert speech and all(0 <= s["start_s"] < s["end_s"] <= rows["speech.ogg"]["duration_s"] for s in speech)
