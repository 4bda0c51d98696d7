"""CI smoke run of the load-test tooling, so it never rots: tiny rates, a few seconds, real servers.

No timing assertions here (speed goals are ratios in loadtest/bench.py's report): these tests check
that the one benchmark command runs end to end against a real `earshot serve` on 127.0.0.1, that
every request succeeded, and that the report has the fields BENCHMARKS.md is built from.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from loadtest import launch

REPO_ROOT = Path(__file__).resolve().parents[2]
LOADTEST = REPO_ROOT / "loadtest"


@pytest.mark.slow
def test_bench_command_end_to_end(yamnet_bundle, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="bench.py draws its plots with matplotlib (test extra)")
    out = tmp_path / "service.json"
    command = [
        sys.executable, str(LOADTEST / "bench.py"), "--bundle", str(yamnet_bundle.path), "--formats", "wav",
        "--clips", "4", "--duration", "1.5", "--fractions", "0.25", "--unloaded", "4", "--warmup", "1",
        "--out", str(out),
    ]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert finished.returncode == 0, finished.stdout[-2000:] + finished.stderr[-4000:]
    report = json.loads(out.read_text())

    assert report["raw_engine"]["windows_per_s"] > 0
    assert report["bundle"]["name"] == yamnet_bundle.manifest.name
    wav = report["formats"]["wav"]
    steps = [wav["unloaded"], wav["saturation"], *wav["sweep"], wav["half_load_constant_arrivals"]]
    assert [e["fraction_of_max"] for e in wav["sweep"]] == [0.25, 0.5]
    for step in steps:
        summary = step["summary"]
        assert summary["requests"] > 0
        assert summary["ok"] == summary["requests"], summary["statuses"]
        assert summary["latency_ms"]["p50"] > 0
        assert summary["queue_ms"]["p50"] is not None and summary["inference_ms"]["p50"] is not None
        # the server ran every window it was sent, and /metrics saw the batches
        assert step["server"]["windows"] == summary["requests"] * wav["windows_per_request"]
        assert sum(step["server"]["batch_histogram"].values()) == step["server"]["batches"] > 0
    assert wav["half_load"]["fraction_of_max"] == 0.5
    assert set(report["ratios"]) >= {"wav_service_vs_raw_engine", "wav_p99_half_load_vs_unloaded_p50"}
    assert set(report["goals"]) >= {"wav_service_vs_raw_engine", "wav_p99_half_load_vs_unloaded_p50"}
    for name in report["plots"]:
        assert (tmp_path / name).stat().st_size > 0


@pytest.mark.slow
def test_locust_headless(yamnet_bundle, tmp_path: Path) -> None:
    # found, not imported: importing locust monkey-patches with gevent, which deadlocks a process
    # that already runs threads (the other tests' servers and pools); it runs in a subprocess below
    if importlib.util.find_spec("locust") is None:
        pytest.skip("locust is a load-test tool (test extra)")
    with launch.running([yamnet_bundle.path], tmp_path / "server.log", ready_timeout_s=180) as server:
        command = [
            sys.executable, "-m", "locust", "-f", str(LOADTEST / "locustfile.py"), "--host", server.url,
            "--headless", "-u", "3", "-r", "3", "-t", "10s",  # 10 s: users build their payloads first, slow on a loaded machine
            "--csv", str(tmp_path / "locust"), "--only-summary",
            "TenSecondWav", "MixedWithLong", "OpenAIEmbeddings",
        ]
        env_clips = {"EARSHOT_LOCUST_CLIPS": "2", "EARSHOT_LOCUST_INPUTS": "2"}
        finished = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=REPO_ROOT,
                                  env={**os.environ, **env_clips})
    assert finished.returncode == 0, finished.stderr[-4000:]
    with open(tmp_path / "locust_stats.csv", newline="") as stats:
        rows = {row["Name"]: row for row in csv.DictReader(stats)}
    assert int(rows["Aggregated"]["Request Count"]) > 0
    assert int(rows["Aggregated"]["Failure Count"]) == 0
    assert any(name.startswith("/v1/embeddings") for name in rows)
