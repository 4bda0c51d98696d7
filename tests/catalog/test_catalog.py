"""`earshot embed` end to end on a catalog of real recordings, bad files included."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from earshot.catalog import table
from earshot.catalog.inputs import AUDIO_EXTENSIONS, expand_inputs
from earshot.cli import main
from tests.service.small_bundles import pooled

pytestmark = pytest.mark.slow  # end-to-end: real processes, seconds per test

GOOD = [
    "speech_french.ogg", "bird_crow.ogg", "drum_kick.flac", "music_piano.flac", "choir.flac",
    "variant_mono_8k_pcm16.wav", "variant_aiff.aiff", "variant_mono_44k.mp3", "variant_mono_48k.opus.ogg",
    "short_50ms.wav", "silence_1s.wav", "speech_spanish_16s.ogg",
]


@pytest.fixture()
def catalog(tmp_path: Path, audio_dir: Path) -> Path:
    """Real clips copied into nested folders, plus every bad input from ../shared/audio/bad."""
    root = tmp_path / "catalog"
    for index, name in enumerate(GOOD):
        folder = root / f"shelf{index % 3}" / ("deep" if index % 2 else "")
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(audio_dir / name, folder / name)
    (root / "bad").mkdir()
    for bad in sorted((audio_dir / "bad").iterdir()):
        shutil.copy(bad, root / "bad" / bad.name)
    (root / "notes.md").write_text("not audio, not listed")  # skipped: not an audio extension
    # (bad/not_audio.txt is skipped the same way; the other bad files carry audio extensions)
    return root


def expected_paths(root: Path) -> set[str]:
    return {str(p) for p in root.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS}


def read_rows(path: Path) -> dict[str, dict]:
    rows = pq.read_table(path).to_pylist()
    paths = [row["path"] for row in rows]
    assert len(paths) == len(set(paths)), "a path has more than one row"
    return {row["path"]: row for row in rows}


def cosine(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def embed_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "earshot.cli", "embed", *args], capture_output=True, text=True, timeout=300
    )


def test_every_file_gets_one_row_and_bad_files_get_errors(catalog, yamnet_bundle, tmp_path):
    out = tmp_path / "out" / "catalog.parquet"
    code = main(["embed", str(catalog), "--bundle", str(yamnet_bundle.path), "--out", str(out),
                 "--workers", "2", "--top-k", "3", "--windows"])
    assert code == 1  # some files failed: the exit status says so
    rows = read_rows(out)
    assert set(rows) == expected_paths(catalog)
    assert not table.parts_dir(out).exists()
    for path, row in rows.items():
        if "/bad/" in path:
            assert row["error"] and row["embedding"] is None, path
            continue
        assert row["error"] is None, (path, row["error"])
        assert len(row["embedding"]) == 1024 and len(row["tags"]) == 3
        assert row["model"] == "yamnet" and row["duration_s"] > 0 and row["size_bytes"] == os.path.getsize(path)
        windows = row["windows"]
        assert windows[0]["start_s"] == 0.0 and windows[-1]["end_s"] == pytest.approx(row["duration_s"], abs=1e-3)
        manifest = yamnet_bundle.manifest
        clip = pooled(np.array([w["embedding"] for w in windows]), round(row["duration_s"] * manifest.sample_rate),
                      manifest.window_samples, manifest.hop_samples)
        assert cosine(clip, row["embedding"]) > 0.99999  # the clip embedding pools its windows
    speech = rows[str(catalog / "shelf0" / "speech_french.ogg")]
    assert "Speech" in [tag["label"] for tag in speech["tags"]]
    nan_row = rows[str(catalog / "bad" / "nan_inf_float.wav")]
    assert "NaN" in nan_row["error"]


def test_rows_match_what_the_http_service_returns(catalog, yamnet_bundle, tmp_path):
    from fastapi.testclient import TestClient

    from earshot.api.app import create_app
    from earshot.settings import Settings

    out = tmp_path / "catalog.parquet"
    assert main(["embed", str(catalog / "shelf0"), "--bundle", str(yamnet_bundle.path), "--out", str(out)]) == 0
    rows = read_rows(out)
    assert len(rows) >= 3
    settings = Settings(bundles=[str(yamnet_bundle.path)], cache_dir=tmp_path / "cache")
    with TestClient(create_app(settings)) as client:
        deadline = time.monotonic() + 60
        while client.get("/readyz").status_code != 200:  # the app loads its bundles in the background
            assert time.monotonic() < deadline, "the service never became ready"
            time.sleep(0.05)
        for path, row in rows.items():
            response = client.post("/v1/embed", content=Path(path).read_bytes(),
                                   headers={"content-type": "application/octet-stream"})
            assert response.status_code == 200, response.text
            assert cosine(response.json()["embedding"], row["embedding"]) >= 0.999, path


def test_manifests_csv_and_text(catalog, yamnet_bundle, tmp_path, audio_dir):
    text_manifest = tmp_path / "list.txt"
    text_manifest.write_text(f"# two clips\n{audio_dir / 'drum_snare.flac'}\n\ncatalog/shelf0/speech_french.ogg\n")
    csv_manifest = tmp_path / "list.csv"
    csv_manifest.write_text(f"path,comment\n{audio_dir / 'tabla.flac'},tabla\nmissing.wav,gone\n")
    paths = expand_inputs([str(text_manifest), str(csv_manifest)])
    assert paths == [
        str(audio_dir / "drum_snare.flac"),
        str(tmp_path / "catalog/shelf0/speech_french.ogg"),
        str(audio_dir / "tabla.flac"),
        str(tmp_path / "missing.wav"),
    ]
    out = tmp_path / "m.parquet"
    assert main(["embed", str(text_manifest), str(csv_manifest), "--bundle", str(yamnet_bundle.path),
                 "--out", str(out)]) == 1
    rows = read_rows(out)
    assert rows[str(tmp_path / "missing.wav")]["error"].startswith("cannot read the file")
    assert sum(row["error"] is None for row in rows.values()) == 3


def test_killed_run_resumes_without_duplicates(catalog, yamnet_bundle, tmp_path, audio_dir):
    # enough files that the job is still running when the test has seen its first rows
    for copy in range(150):
        shutil.copy(audio_dir / "drum_kick.flac", catalog / "shelf1" / f"kick-{copy:03d}.flac")
    out = tmp_path / "resume.parquet"
    args = [str(catalog), "--bundle", str(yamnet_bundle.path), "--out", str(out), "--workers", "1", "--flush-rows", "2"]
    process = subprocess.Popen([sys.executable, "-m", "earshot.cli", "embed", *args],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120

    def good_rows_written() -> int:
        return sum(not done.failed for done in table.done_files(out, "yamnet").values())

    while good_rows_written() < 2:  # the bad/ folder sorts first: wait for real embeddings
        assert process.poll() is None, "the job ended before it could be killed half-way"
        assert time.monotonic() < deadline, "no rows were written"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not out.exists()  # killed before compaction: only part files hold rows
    done_before = good_rows_written()
    assert len(table.done_files(out, "yamnet")) < len(expected_paths(catalog))

    resumed = embed_cli(*args, "--resume")
    assert resumed.returncode == 1, resumed.stderr  # the bad files still fail
    rows = read_rows(out)
    assert set(rows) == expected_paths(catalog)
    assert f", {done_before} skipped as done" in resumed.stderr  # what the killed run embedded is kept

    again = embed_cli(*args, "--resume")
    assert read_rows(out).keys() == rows.keys()
    failed = sum(row["error"] is not None for row in rows.values())
    assert f"{len(rows) - failed} skipped as done" in again.stderr  # only the failed files are retried


def test_resume_refuses_another_layout(catalog, yamnet_bundle, tmp_path):
    out = tmp_path / "layout.parquet"
    assert main(["embed", str(catalog / "shelf1"), "--bundle", str(yamnet_bundle.path), "--out", str(out)]) == 0
    code = main(["embed", str(catalog / "shelf1"), "--bundle", str(yamnet_bundle.path), "--out", str(out),
                 "--resume", "--windows"])
    assert code == 2


def test_ray_engine_gives_the_same_rows(catalog, yamnet_bundle, tmp_path):
    pytest.importorskip("ray", reason="the ray extra is not installed")
    local_out, ray_out = tmp_path / "local.parquet", tmp_path / "ray.parquet"
    inputs = [str(catalog / "shelf0"), str(catalog / "bad")]
    assert main(["embed", *inputs, "--bundle", str(yamnet_bundle.path), "--out", str(local_out)]) == 1
    assert main(["embed", *inputs, "--bundle", str(yamnet_bundle.path), "--out", str(ray_out),
                 "--engine", "ray", "--workers", "2"]) == 1
    local, remote = read_rows(local_out), read_rows(ray_out)
    assert local.keys() == remote.keys()
    for path in local:
        assert (local[path]["error"] is None) == (remote[path]["error"] is None), path
        if local[path]["error"] is None:
            assert cosine(local[path]["embedding"], remote[path]["embedding"]) > 0.99999
            assert [t["label"] for t in local[path]["tags"]] == [t["label"] for t in remote[path]["tags"]]
        else:
            assert local[path]["error"] == remote[path]["error"]
