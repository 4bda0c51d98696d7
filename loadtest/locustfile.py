"""Locust scenarios against a running earshot (closed-loop users; bench.py does the open-loop sweep).

    earshot serve --port 8000 &
    locust -f loadtest/locustfile.py --host http://127.0.0.1:8000 --headless -u 8 -r 8 -t 30s \
        --csv loadtest/results/locust TenSecondWav

User classes (name one or more on the command line; none = all, weighted):
  ShortClips       1 s clips, 16 kHz WAV                        POST /v1/embed
  TenSecondWav     10 s clips, 16 kHz WAV (cheap to decode)     POST /v1/embed
  TenSecondFlac    10 s clips, FLAC (decoding costs server CPU) POST /v1/embed
  MixedWithLong    mostly 10 s WAV, some 1 s, some of the 75 s 22.05 kHz stereo FLAC file, as is
  OpenAIEmbeddings batches of 10 s WAV clips as base64 data URIs POST /v1/embeddings

Bodies are made once, at start, from ../shared/audio (see payloads.py). EARSHOT_LOCUST_CLIPS sets
how many distinct bodies each scenario cycles through (default 8); EARSHOT_LOCUST_MODEL the model
name sent (default "default"); EARSHOT_LOCUST_INPUTS the inputs per /v1/embeddings request (default 4).
"""

from __future__ import annotations

import itertools
import os
import sys
from functools import cache
from pathlib import Path

from locust import HttpUser, between, constant, task

sys.path.insert(0, str(Path(__file__).resolve().parent))

import payloads  # noqa: E402  (loadtest/payloads.py)

CLIPS = int(os.environ.get("EARSHOT_LOCUST_CLIPS", "8"))
MODEL = os.environ.get("EARSHOT_LOCUST_MODEL", "default")
INPUTS_PER_REQUEST = int(os.environ.get("EARSHOT_LOCUST_INPUTS", "4"))


@cache
def bodies(seconds: float, fmt: str) -> tuple[payloads.Payload, ...]:
    return tuple(payloads.clips(CLIPS, seconds, fmt))


@cache
def long_body() -> payloads.Payload:
    return payloads.long_file()


class _EmbedUser(HttpUser):
    abstract = True
    wait_time = constant(0)  # back to back: each user is one client with one request in flight

    def embed(self, payload: payloads.Payload, name: str) -> None:
        with self.client.post(
            f"/v1/embed?model={MODEL}", data=payload.body, headers={"content-type": payload.media_type},
            name=name, catch_response=True,
        ) as response:
            if response.status_code != 200:
                response.failure(f"{response.status_code}: {response.text[:200]}")
            elif "embedding" not in response.json():
                response.failure("no embedding in the answer")


class ShortClips(_EmbedUser):
    weight = 1

    def on_start(self) -> None:
        self.cycle = itertools.cycle(bodies(payloads.SHORT_SECONDS, "wav"))

    @task
    def short_clip(self) -> None:
        self.embed(next(self.cycle), "/v1/embed 1s wav")


class TenSecondWav(_EmbedUser):
    weight = 3

    def on_start(self) -> None:
        self.cycle = itertools.cycle(bodies(payloads.CLIP_SECONDS, "wav"))

    @task
    def ten_seconds(self) -> None:
        self.embed(next(self.cycle), "/v1/embed 10s wav")


class TenSecondFlac(_EmbedUser):
    weight = 1

    def on_start(self) -> None:
        self.cycle = itertools.cycle(bodies(payloads.CLIP_SECONDS, "flac"))

    @task
    def ten_seconds_flac(self) -> None:
        self.embed(next(self.cycle), "/v1/embed 10s flac")


class MixedWithLong(_EmbedUser):
    """8 : 3 : 1 of 10 s WAV, 1 s WAV and the 75 s FLAC file (decoded and resampled by the server)."""

    weight = 1
    wait_time = between(0, 0.1)

    def on_start(self) -> None:
        self.ten = itertools.cycle(bodies(payloads.CLIP_SECONDS, "wav"))
        self.short = itertools.cycle(bodies(payloads.SHORT_SECONDS, "wav"))

    @task(8)
    def ten_seconds(self) -> None:
        self.embed(next(self.ten), "/v1/embed 10s wav")

    @task(3)
    def short_clip(self) -> None:
        self.embed(next(self.short), "/v1/embed 1s wav")

    @task(1)
    def long_file(self) -> None:
        self.embed(long_body(), "/v1/embed 75s flac")


class OpenAIEmbeddings(HttpUser):
    """The OpenAI-style endpoint, as the official client sends it: JSON with base64 data URIs."""

    weight = 1
    wait_time = constant(0)

    def on_start(self) -> None:
        uris = [payload.data_uri() for payload in bodies(payloads.CLIP_SECONDS, "wav")]
        self.cycle = itertools.cycle(uris)

    @task
    def embeddings(self) -> None:
        inputs = [next(self.cycle) for _ in range(INPUTS_PER_REQUEST)]
        with self.client.post(
            "/v1/embeddings", json={"model": MODEL, "input": inputs, "encoding_format": "float"},
            name=f"/v1/embeddings {INPUTS_PER_REQUEST}x10s wav", catch_response=True,
        ) as response:
            if response.status_code != 200:
                response.failure(f"{response.status_code}: {response.text[:200]}")
            elif len(response.json().get("data", [])) != len(inputs):
                response.failure("wrong number of embeddings")
