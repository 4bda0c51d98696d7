"""The default model through the real app: what a new user gets from the README's first command."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from earshot.api.app import create_app
from earshot.settings import Settings
from tests.service.small_bundles import pooled

AUDIO_DIR = Path(__file__).resolve().parents[2] / ".." / "shared" / "audio"
RATE, WINDOW, HOP = 16000, 15360, 7680  # YAMNet: 0.96 s windows every 0.48 s


@pytest.fixture(scope="module")
def client(yamnet_bundle, tmp_path_factory):
    settings = Settings(bundles=[str(yamnet_bundle.path)], cache_dir=tmp_path_factory.mktemp("cache"))
    with TestClient(create_app(settings)) as test_client:
        deadline = time.monotonic() + 60
        while test_client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "the service never became ready"
            time.sleep(0.05)
        yield test_client


def embed(client: TestClient, name: str, **params) -> dict:
    response = client.post("/v1/embed", params=params, content=(AUDIO_DIR / name).read_bytes(),
                           headers={"content-type": "application/octet-stream"})
    assert response.status_code == 200, response.text
    return response.json()


def test_the_75_s_file_gets_timestamped_windows_and_the_clip_pools_them(client):
    body = embed(client, "long_75s_stereo_22k.flac", windows="true", top_k=3)
    samples = round(body["duration_s"] * RATE)
    assert body["duration_s"] == pytest.approx(75.0, abs=0.5)
    expected = 1 + math.ceil((samples - WINDOW) / HOP)
    windows = body["windows"]
    assert len(windows) == expected
    for index, window in enumerate(windows):
        assert window["start_s"] == pytest.approx(index * HOP / RATE, abs=1e-6)
        assert window["end_s"] == pytest.approx(min((index * HOP + WINDOW) / RATE, body["duration_s"]), abs=1e-6)
        assert len(window["embedding"]) == 1024 and len(window["tags"]) == 3
    assert windows[-1]["end_s"] == pytest.approx(body["duration_s"], abs=1e-6)
    clip = pooled(np.array([w["embedding"] for w in windows]), samples, WINDOW, HOP)
    np.testing.assert_allclose(body["embedding"], clip, atol=1e-5)
    assert "Music" in [tag["label"] for tag in body["tags"]]


@pytest.mark.parametrize(
    "name, expected",
    [
        ("speech_spanish_16s.ogg", {"Speech"}),
        ("speech_french.ogg", {"Speech"}),
        ("bird_crow.ogg", {"Crow", "Caw", "Bird", "Bird vocalization, bird call, bird song"}),
        ("music_piano.flac", {"Music"}),
        ("music_drum_loop.flac", {"Music", "Drum"}),
    ],
)
def test_real_recordings_get_the_tags_a_person_hears(client, name, expected):
    labels = [tag["label"] for tag in embed(client, name, top_k=3)["tags"]]
    assert expected & set(labels), labels


def test_default_is_an_alias_of_yamnet(client):
    assert embed(client, "speech_french.ogg", model="default")["model"] == "yamnet"
    assert [m["id"] for m in client.get("/v1/models").json()["data"]] == ["yamnet"]
