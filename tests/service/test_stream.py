"""GET /v1/stream over a real server on loopback with a real WebSocket client (websockets):
streamed windows equal a whole-file request's, streams share batches, limits and bad starts get
their close codes, SIGTERM drains open streams, and `earshot stream` prints what comes."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys

import httpx
import numpy as np
import pytest
import soundfile
from loadtest.launch import running
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

LONG = "long_75s_stereo_22k.flac"


def pcm16(path) -> tuple[bytes, int, int]:
    audio, rate = soundfile.read(path, dtype="int16", always_2d=True)  # (frames, channels)
    return audio.astype("<i2").tobytes(), rate, audio.shape[1]


def server(bundle, tmp_path, **flags):
    tmp_path.mkdir(parents=True, exist_ok=True)
    return running([bundle.path], log=tmp_path / "server.log", flags={"threads": 1, **flags},
                   env={"EARSHOT_CACHE_DIR": str(tmp_path / "cache")})


async def stream_file(url: str, data: bytes, rate: int, channels: int, chunk_s: float = 0.1, **start) -> tuple[list, int]:
    """Send `data` in chunks of chunk_s seconds, then end; every message received, and the close code."""
    messages: list[dict] = []
    async with connect(url.replace("http", "ws") + "/v1/stream", max_size=None) as socket:
        await socket.send(json.dumps({"sample_rate": rate, "channels": channels, "encoding": "pcm_s16le", **start}))
        step = int(rate * chunk_s) * 2 * channels

        async def send() -> None:
            for offset in range(0, len(data), step):
                await socket.send(data[offset : offset + step])
            await socket.send(json.dumps({"event": "end"}))

        sending = asyncio.create_task(send())
        try:
            async for message in socket:
                messages.append(json.loads(message))
        except ConnectionClosed:
            pass
        await asyncio.gather(sending, return_exceptions=True)
        return messages, socket.close_code or 0


@pytest.mark.anyio
async def test_a_streamed_file_gives_the_whole_files_windows(tiny_bundle, audio_dir, tmp_path):
    data, rate, channels = pcm16(audio_dir / LONG)
    with server(tiny_bundle, tmp_path) as live:
        messages, code = await stream_file(live.url, data, rate, channels, embeddings=True, top_k=2)
        whole = httpx.post(f"{live.url}/v1/embed?windows=true&top_k=2", content=(audio_dir / LONG).read_bytes(),
                           headers={"content-type": "audio/flac"}, timeout=120).json()
    assert code == 1000 and messages[0]["event"] == "ready" and messages[-1]["event"] == "end"
    windows = [m for m in messages if m["event"] == "window"]
    assert [w["index"] for w in windows] == list(range(len(whole["windows"])))
    assert [(w["start_s"], w["end_s"]) for w in windows] == [(w["start_s"], w["end_s"]) for w in whole["windows"]]
    np.testing.assert_allclose([w["embedding"] for w in windows], [w["embedding"] for w in whole["windows"]], atol=1e-5)
    assert [[t["label"] for t in w["tags"]] for w in windows] == [[t["label"] for t in w["tags"]] for w in whole["windows"]]
    assert messages[-1]["windows"] == len(windows) and messages[-1]["duration_s"] == pytest.approx(whole["duration_s"])


@pytest.mark.anyio
async def test_twenty_streams_share_batches_each_in_order(tiny_bundle, audio_dir, tmp_path):
    data, rate, channels = pcm16(audio_dir / "speech_spanish_16s.ogg")
    with server(tiny_bundle, tmp_path, max_wait_ms=20) as live:
        results = await asyncio.gather(*(stream_file(live.url, data, rate, channels) for _ in range(20)))
        metrics = httpx.get(f"{live.url}/metrics").text
    for messages, code in results:
        windows = [m for m in messages if m["event"] == "window"]
        assert code == 1000 and windows and [w["index"] for w in windows] == list(range(len(windows)))
        assert all(a["start_s"] < b["start_s"] for a, b in zip(windows, windows[1:], strict=False))
    per_stream = len([m for m in results[0][0] if m["event"] == "window"])
    count = float(re.search(r'earshot_batch_size_count\{model="tiny"\} (\S+)', metrics).group(1))
    total = float(re.search(r'earshot_batch_size_sum\{model="tiny"\} (\S+)', metrics).group(1))
    assert total == 20 * per_stream and count < total / 2  # windows of many streams ran together
    assert re.search(r'earshot_stream_window_latency_seconds_count\{model="tiny"\} [1-9]', metrics)
    assert re.search(r"earshot_streams_open 0.0", metrics)


async def first_messages(url: str, *messages, headers=None, query: str = "") -> tuple[list, int]:
    got = []
    async with connect(url.replace("http", "ws") + "/v1/stream" + query, additional_headers=headers) as socket:
        try:
            for message in messages:
                await socket.send(message)  # a refused stream may be closed before this is sent
        except ConnectionClosed:
            pass
        try:
            async for reply in socket:
                got.append(json.loads(reply))
        except ConnectionClosed:
            pass
        return got, socket.close_code or 0


@pytest.mark.anyio
async def test_bad_starts_limits_and_keys(tiny_bundle, slow_bundle, tmp_path, audio_dir):
    good = json.dumps({"sample_rate": 16000, "encoding": "pcm_s16le"})
    with server(tiny_bundle, tmp_path / "a", stream_idle_timeout_s=0.5, api_keys="sesame", max_streams=1) as live:
        url = live.url
        key = {"Authorization": "Bearer sesame"}
        cases = {
            "binary first": (b"\x00\x01", 4400, "bad_request"),
            "not JSON": ("{nope", 4400, "bad_request"),
            "wrong encoding": (json.dumps({"sample_rate": 16000, "encoding": "mp3"}), 4400, "bad_request"),
            "unknown model": (json.dumps({"sample_rate": 16000, "encoding": "f32le", "model": "nope"}), 4404,
                              "model_not_found"),
            "unknown field": (json.dumps({"sample_rate": 16000, "encoding": "f32le", "rate": 1}), 4400, "bad_request"),
        }
        for what, (first, close, code) in cases.items():
            got, closed = await first_messages(url, first, headers=key)
            assert (closed, got[-1]["error"]["code"]) == (close, code), what
        assert "pcm_s16le" in (await first_messages(url, cases["wrong encoding"][0], headers=key))[0][-1]["error"]["message"]
        got, closed = await first_messages(url, good, headers=key)  # then silence
        assert got[0]["event"] == "ready" and (closed, got[-1]["error"]["code"]) == (4408, "stream_idle")
        got, closed = await first_messages(url, good)
        assert (closed, got[-1]["error"]["code"]) == (4401, "unauthorized")
        assert (await first_messages(url, json.dumps({"event": "x"}), query="?api_key=sesame"))[1] == 4400  # key in the query
        async with connect(url.replace("http", "ws") + "/v1/stream", additional_headers=key) as holder:
            await holder.send(good)
            await holder.recv()
            got, closed = await first_messages(url, good, headers=key)
            assert (closed, got[-1]["error"]["code"]) == (4429, "too_many_streams")
    with server(slow_bundle, tmp_path / "b", stream_max_backlog_s=0.5) as live:
        data, rate, channels = pcm16(audio_dir / "speech_spanish_16s.ogg")
        messages, closed = await stream_file(live.url, data, rate, channels, chunk_s=5.0)
        assert closed == 4413 and messages[-1]["error"]["code"] == "stream_backlog_exceeded"


@pytest.mark.anyio
async def test_sigterm_drains_open_streams(tiny_bundle, audio_dir, tmp_path):
    data, rate, channels = pcm16(audio_dir / "speech_spanish_16s.ogg")
    with server(tiny_bundle, tmp_path) as live:
        async with connect(live.url.replace("http", "ws") + "/v1/stream") as socket:
            await socket.send(json.dumps({"sample_rate": rate, "channels": channels, "encoding": "pcm_s16le"}))
            assert json.loads(await socket.recv())["event"] == "ready"
            await socket.send(data[: len(data) // 4])
            await asyncio.sleep(0.3)
            live.process.send_signal(signal.SIGTERM)
            messages = []
            try:
                async for message in socket:
                    messages.append(json.loads(message))
            except ConnectionClosed:
                pass
            assert socket.close_code == 1001
        assert live.process.wait(30) == 0
    assert messages[-1]["event"] == "end" and "shutting down" in messages[-1]["reason"]
    windows = [m for m in messages if m["event"] == "window"]
    duration = len(data) // 4 / (2 * channels) / rate
    assert windows and windows[-1]["end_s"] == pytest.approx(duration, abs=0.01)  # the last, partial window too


def test_the_command_line_client(tiny_bundle, audio_dir, tmp_path):
    with server(tiny_bundle, tmp_path) as live:
        done = subprocess.run(
            [sys.executable, "-m", "earshot.cli", "stream", str(audio_dir / "bird_crow.ogg"), "--url",
             live.url.replace("http", "ws") + "/v1/stream", "--segments"],
            capture_output=True, text=True, timeout=120,
        )
        raw = subprocess.run(
            [sys.executable, "-m", "earshot.cli", "stream", "-", "--url", live.url.replace("http", "ws") + "/v1/stream"],
            input=b"", capture_output=True, timeout=60,
        )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert lines[0]["event"] == "ready" and lines[-1]["event"] == "end" and lines[-1]["windows"] >= 1
    starts = [m["label"] for m in lines if m["event"] == "segment_start"]
    ends = [m["label"] for m in lines if m["event"] == "segment_end"]
    assert sorted(starts) == sorted(ends)  # every segment that opened was closed
    assert raw.returncode == 2 and b"--sample-rate" in raw.stderr
