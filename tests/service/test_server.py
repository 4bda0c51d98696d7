"""The real server process (uvicorn on 127.0.0.1): graceful drain on SIGTERM, client disconnects."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from loadtest.launch import Server

from loadtest import launch
from tests.service.metrics_text import sample

pytestmark = [pytest.mark.anyio, pytest.mark.slow]  # real server processes
REPO_ROOT = Path(__file__).resolve().parents[2]
AUDIO_DIR = REPO_ROOT / ".." / "shared" / "audio"
START_TIMEOUT_S = 60


def _start(bundle_path: Path, tmp_path: Path, **settings: str) -> Server:
    env = {
        "EARSHOT_BUNDLES": str(bundle_path),
        "EARSHOT_CACHE_DIR": str(tmp_path / "cache"),
        "EARSHOT_THREADS": "1",
        "EARSHOT_MAX_BATCH_WINDOWS": "4",
        **{f"EARSHOT_{k.upper()}": v for k, v in settings.items()},
    }
    port = launch.free_port()
    return launch.start(
        log=tmp_path / f"server-{port}.log", port=port, command=[sys.executable, "-m", "earshot.api.server"], env=env,
        clean_env=True, ready_timeout_s=START_TIMEOUT_S,
    )


def _stop(server: Server) -> None:
    server.kill()


@pytest.fixture
def slow_server(slow_bundle, tmp_path) -> Iterator[Server]:
    server = _start(slow_bundle.path, tmp_path, GRACE_TIMEOUT_S="60")
    yield server
    _stop(server)


async def _wait_for(client: httpx.AsyncClient, url: str, name: str, at_least: float, **labels: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if sample((await client.get(url + "/metrics")).text, name, **labels) >= at_least:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{name}{labels} never reached {at_least}")


async def test_sigterm_finishes_admitted_requests_refuses_new_ones_then_exits(slow_server: Server) -> None:
    url = slow_server.url
    long_clip = (AUDIO_DIR / "speech_greek_20s.ogg").read_bytes()  # 198 windows: about a second of work
    short_clip = (AUDIO_DIR / "music_piano.flac").read_bytes()  # 29 windows
    limits = httpx.Limits(max_connections=20)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client, httpx.AsyncClient(timeout=10) as prober:
        admitted = [asyncio.create_task(client.post(url + "/v1/embed", content=long_clip))] + [
            asyncio.create_task(client.post(url + "/v1/embed", content=short_clip)) for _ in range(6)
        ]
        await _wait_for(prober, url, "earshot_in_flight_requests", 7)
        await _wait_for(prober, url, "earshot_queued_windows", 1, model="slow")
        slow_server.process.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.2)  # the drain begins on the server's next loop turn
        ready = await prober.get(url + "/readyz")
        refused = await prober.post(url + "/v1/embed", content=short_clip)
        metrics = await prober.get(url + "/metrics")
        answers = await asyncio.gather(*admitted)
    assert ready.status_code == 503 and ready.json()["error"]["code"] == "draining"
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "draining"
    assert metrics.status_code == 200 and sample(metrics.text, "earshot_ready") == 0
    for answer in answers:
        assert answer.status_code == 200, answer.text
        assert answer.json()["model"] == "slow" and len(answer.json()["embedding"]) == 8
    assert slow_server.process.wait(30) == 0, slow_server.output()
    with pytest.raises(httpx.TransportError):
        httpx.get(url + "/healthz", timeout=2)


async def test_the_grace_timeout_ends_the_drain(slow_bundle, tmp_path) -> None:
    server = _start(slow_bundle.path, tmp_path, GRACE_TIMEOUT_S="0.2")
    try:
        url = server.url
        endless = (AUDIO_DIR / "long_75s_stereo_22k.flac").read_bytes()  # 750 windows: seconds of work
        async with httpx.AsyncClient(timeout=60) as client, httpx.AsyncClient(timeout=10) as prober:
            admitted = asyncio.create_task(client.post(url + "/v1/embed", content=endless))
            await _wait_for(prober, url, "earshot_windows_total", 1, model="slow")
            server.process.send_signal(signal.SIGTERM)
            cut_off = await admitted
        assert cut_off.status_code == 503 and cut_off.json()["error"]["code"] == "draining"
        assert await asyncio.to_thread(server.process.wait, 30) == 0, server.output()
        assert "grace period of 0.2 s over with 1 request(s) in flight" in server.output()
    finally:
        _stop(server)


async def test_a_client_that_hangs_up_has_its_windows_dropped(slow_server: Server) -> None:
    url = slow_server.url
    long_clip = (AUDIO_DIR / "speech_greek_20s.ogg").read_bytes()
    async with httpx.AsyncClient(timeout=10) as prober:
        async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=0.3)) as impatient:
            with pytest.raises(httpx.ReadTimeout):
                await impatient.post(url + "/v1/embed", content=long_clip)
        # leaving the client closes its connection: the server sees the disconnect
        await _wait_for(prober, url, "earshot_dropped_windows_total", 1, model="slow", reason="cancelled")
        metrics = (await prober.get(url + "/metrics")).text
        assert sample(metrics, "earshot_windows_total", model="slow") < 198
        deadline = time.monotonic() + 10
        while sample(metrics, "earshot_queued_windows", model="slow") or sample(metrics, "earshot_in_flight_requests"):
            assert time.monotonic() < deadline, "the abandoned request should leave the queue"
            await asyncio.sleep(0.02)
            metrics = (await prober.get(url + "/metrics")).text
        ok = await prober.post(url + "/v1/embed", content=(AUDIO_DIR / "drum_kick.flac").read_bytes())
        assert ok.status_code == 200


def test_the_server_exits_non_zero_when_a_bundle_cannot_load(tmp_path) -> None:
    port = launch.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EARSHOT_")}
    env.update(
        PYTHONPATH=str(REPO_ROOT), EARSHOT_BUNDLES=str(tmp_path / "missing"), EARSHOT_PORT=str(port),
        EARSHOT_CACHE_DIR=str(tmp_path / "cache"),
    )
    done = subprocess.run(
        [sys.executable, "-m", "earshot.api.server"], env=env, capture_output=True, timeout=60
    )
    assert done.returncode == 1
    assert b"missing" in done.stderr + done.stdout
