"""The HTTP API on the real app (httpx over ASGI, lifespan running) with a small real bundle."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import httpx
import numpy as np
import pytest

from earshot.api.app import create_app
from earshot.engine.audio import AudioLimits, decode
from earshot.engine.windows import cut, window_spec
from tests.service.conftest import make_settings, serving
from tests.service.metrics_text import names, sample
from tests.service.small_bundles import pooled, tiny_reference

pytestmark = pytest.mark.anyio
AUDIO_DIR = Path(__file__).resolve().parents[2] / ".." / "shared" / "audio"
BAD_STATUS = {
    "empty.wav": (400, "empty_audio"),
    "header_only.wav": (400, "empty_audio"),
    "nan_inf_float.wav": (400, "non_finite_audio"),
    "not_audio.txt": (400, "undecodable_audio"),
    "png_named.wav": (400, "undecodable_audio"),
    "random_bytes.wav": (400, "undecodable_audio"),
    "truncated.ogg": (400, "undecodable_audio"),
}


def _expected_embedding(bundle, path: Path) -> np.ndarray:
    manifest = bundle.manifest
    audio = decode(path.read_bytes(), manifest.sample_rate, AudioLimits(1 << 30, 1e6))
    windows = cut(audio.waveform, window_spec(manifest))
    embedding = tiny_reference(np.asarray(windows.samples), windows.num_samples)[0]
    return pooled(embedding, len(audio.waveform), manifest.window_samples, manifest.hop_samples)


def _error(response: httpx.Response) -> str:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"} and body["error"]["message"]
    return body["error"]["code"]


async def test_raw_and_multipart_bodies_give_the_same_answer(tiny_bundle, tmp_path) -> None:
    path = AUDIO_DIR / "bird_crow.ogg"
    expected = _expected_embedding(tiny_bundle, path)
    async with serving(make_settings(tmp_path), [tiny_bundle.path]) as client:
        raw = await client.post("/v1/embed", content=path.read_bytes(), headers={"content-type": "audio/ogg"})
        octets = await client.post(
            "/v1/embed?model=default&top_k=2", content=path.read_bytes(),
            headers={"content-type": "application/octet-stream"},
        )
        form = await client.post("/v1/embed?model=tiny", files={"file": ("crow.ogg", path.read_bytes(), "audio/ogg")})
    for response in (raw, octets, form):
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model"] == "tiny" and body["duration_s"] == pytest.approx(1.9628, abs=1e-3)
        np.testing.assert_allclose(body["embedding"], expected, rtol=1e-5, atol=1e-5)
        assert "windows" not in body
        assert float(response.headers["x-queue-time-ms"]) >= 0
        assert float(response.headers["x-inference-time-ms"]) >= 0
    assert len(raw.json()["tags"]) == 4 and len(octets.json()["tags"]) == 2  # all 4 labels (default top_k 5)
    scores = [tag["score"] for tag in raw.json()["tags"]]
    assert scores == sorted(scores, reverse=True)


async def test_per_window_results_carry_timestamps(tiny_bundle, tmp_path) -> None:
    async with serving(make_settings(tmp_path), [tiny_bundle.path]) as client:
        response = await client.post(
            "/v1/embed?windows=true&top_k=1", content=(AUDIO_DIR / "short_50ms.wav").read_bytes(),
            headers={"content-type": "audio/wav"},
        )
    assert response.status_code == 200, response.text
    (window,) = response.json()["windows"]  # 50 ms: one padded window
    assert window["start_s"] == 0 and window["end_s"] == pytest.approx(0.05)
    assert len(window["embedding"]) == 8 and len(window["tags"]) == 1
    np.testing.assert_allclose(window["embedding"], response.json()["embedding"], rtol=1e-6)


async def test_bad_audio_gets_json_4xx_and_the_service_keeps_serving(tiny_bundle, tmp_path) -> None:
    assert sorted(p.name for p in (AUDIO_DIR / "bad").iterdir()) == sorted(BAD_STATUS)
    async with serving(make_settings(tmp_path), [tiny_bundle.path]) as client:
        for name, (status, code) in BAD_STATUS.items():
            data = (AUDIO_DIR / "bad" / name).read_bytes()
            raw = await client.post("/v1/embed", content=data, headers={"content-type": "application/octet-stream"})
            form = await client.post("/v1/embed", files={"file": (name, data, "application/octet-stream")})
            for response in (raw, form):
                assert response.status_code == status, (name, response.text)
                assert _error(response) == code, name
        good = await client.post("/v1/embed", content=(AUDIO_DIR / "tabla.flac").read_bytes())
        assert good.status_code == 200


async def test_requests_that_are_wrong_get_their_status(tiny_bundle, tmp_path) -> None:
    clip = (AUDIO_DIR / "drum_kick.flac").read_bytes()
    settings = make_settings(tmp_path, max_body_bytes=100_000, max_audio_seconds=5.0)
    async with serving(settings, [tiny_bundle.path]) as client:
        cases = [
            (await client.post("/v1/embed", content=b"hello", headers={"content-type": "text/plain"}), 415,
             "unsupported_media_type"),
            (await client.post("/v1/embed?model=nope", content=clip), 404, "model_not_found"),
            (await client.post("/v1/embed?top_k=-1", content=clip), 422, "invalid_parameters"),
            (await client.post("/v1/embed?windows=maybe", content=clip), 422, "invalid_parameters"),
            (await client.post("/v1/embed?colour=red", content=clip), 422, "invalid_parameters"),
            (await client.post("/v1/embed", files={"other": ("a.flac", clip)}), 422, "invalid_input"),
            (await client.post("/v1/embed", content=b"\0" * 100_001), 413, "body_too_large"),
            (await client.post("/v1/embed", content=(AUDIO_DIR / "speech_spanish_16s.ogg").read_bytes()[:99_000]),
             413, "audio_too_long"),
            (await client.get("/v1/nowhere"), 404, "not_found"),
            (await client.get("/v1/embed"), 405, "method_not_allowed"),
        ]

        async def chunks():
            for _ in range(30):
                yield b"\0" * 4_000

        cases.append((await client.post("/v1/embed", content=chunks()), 413, "body_too_large"))  # no length
        for response, status, code in cases:
            assert (response.status_code, _error(response)) == (status, code), response.request.url


async def test_fifty_concurrent_requests_share_batches(tiny_bundle, tmp_path) -> None:
    paths = sorted(p for p in AUDIO_DIR.iterdir() if p.suffix in (".flac", ".ogg", ".wav") and "long" not in p.name)
    expected = {p.name: _expected_embedding(tiny_bundle, p) for p in paths}
    settings = make_settings(tmp_path, max_wait_ms=30.0, max_batch_windows=64)
    async with serving(settings, [tiny_bundle.path]) as client:
        before = (await client.get("/metrics")).text
        requests = [paths[i % len(paths)] for i in range(50)]
        responses = await asyncio.gather(
            *(client.post("/v1/embed", content=p.read_bytes(), headers={"content-type": "audio/x-any"})
              for p in requests)
        )
        after = (await client.get("/metrics")).text
    for path, response in zip(requests, responses, strict=True):
        assert response.status_code == 200, response.text
        np.testing.assert_allclose(response.json()["embedding"], expected[path.name], rtol=1e-5, atol=1e-5)

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, model="tiny", **labels) - sample(before, name, model="tiny", **labels)

    batches = delta("earshot_batch_size_count")
    single = delta("earshot_batch_size_bucket", le="1.0")
    assert batches - single >= 1, "some batches should hold more than one window"
    assert delta("earshot_batch_size_sum") > batches  # on average more than one window per batch
    assert delta("earshot_requests_total", endpoint="/v1/embed", status="200") == 50


async def test_a_full_queue_answers_429_with_retry_after(slow_bundle, tmp_path) -> None:
    long_clip = (AUDIO_DIR / "music_guitar.flac").read_bytes()  # 10 s: 100 windows of the slow model
    settings = make_settings(tmp_path, max_queued_windows=10, max_batch_windows=2)
    async with serving(settings, [slow_bundle.path]) as client:
        first = asyncio.create_task(client.post("/v1/embed", content=long_clip))
        lifecycle = client.app.state.lifecycle
        while lifecycle.engine.queued_windows() == 0:
            await asyncio.sleep(0.002)
        refused = await client.post("/v1/embed", content=(AUDIO_DIR / "drum_kick.flac").read_bytes())
        assert refused.status_code == 429 and _error(refused) == "queue_full"
        assert int(refused.headers["retry-after"]) >= 1
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)


async def test_a_request_past_the_deadline_gets_504(slow_bundle, tmp_path) -> None:
    settings = make_settings(tmp_path, max_batch_windows=2, request_timeout_s=0.2)
    async with serving(settings, [slow_bundle.path]) as client:
        response = await client.post("/v1/embed", content=(AUDIO_DIR / "music_guitar.flac").read_bytes())
        assert response.status_code == 504 and _error(response) == "deadline_exceeded"
        assert client.app.state.lifecycle.engine.dropped_windows()["deadline"] > 50
        metrics = (await client.get("/metrics")).text
    assert sample(metrics, "earshot_errors_total", code="deadline_exceeded") >= 1
    assert sample(metrics, "earshot_dropped_windows_total", model="slow", reason="deadline") > 50


async def test_the_openai_client_gets_embeddings(tiny_bundle, tmp_path) -> None:
    openai = pytest.importorskip("openai")
    paths = [AUDIO_DIR / "speech_french.ogg", AUDIO_DIR / "variant_mono_8k_pcm16.wav"]
    uris = [f"data:audio/wav;base64,{base64.b64encode(p.read_bytes()).decode()}" for p in paths]
    settings = make_settings(tmp_path, api_keys=["sesame"])
    async with serving(settings, [tiny_bundle.path]) as client:
        transport = httpx.ASGITransport(app=client.app)
        async with httpx.AsyncClient(transport=transport) as http_client:
            api = openai.AsyncOpenAI(base_url="http://earshot/v1", api_key="sesame", http_client=http_client)
            as_floats = await api.embeddings.create(model="tiny", input=uris, encoding_format="float")
            as_base64 = await api.embeddings.create(model="default", input=uris)  # the client asks for base64
            listed = await api.models.list()
            wrong = openai.AsyncOpenAI(base_url="http://earshot/v1", api_key="guess", http_client=http_client)
            with pytest.raises(openai.AuthenticationError):
                await wrong.embeddings.create(model="tiny", input=uris[:1])
            with pytest.raises(openai.NotFoundError):
                await api.embeddings.create(model="nope", input=uris[:1])
    for response in (as_floats, as_base64):
        assert response.model == "tiny" and [item.index for item in response.data] == [0, 1]
        for item, path in zip(response.data, paths, strict=True):
            np.testing.assert_allclose(item.embedding, _expected_embedding(tiny_bundle, path), rtol=1e-5, atol=1e-5)
    assert [model.id for model in listed.data] == ["tiny"]


async def test_openai_inputs_that_are_not_audio_data_uris(tiny_bundle, tmp_path) -> None:
    async with serving(make_settings(tmp_path), [tiny_bundle.path]) as client:
        async def post(payload: dict) -> httpx.Response:
            return await client.post("/v1/embeddings", json={"model": "tiny", **payload})

        not_base64 = await post({"input": "data:audio/wav;base64,@@@"})
        text = await post({"input": "data:text/plain;base64," + base64.b64encode(b"hello").decode()})
        garbage = await post({"input": [base64.b64encode(b"hello").decode()]})
        tokens = await post({"input": [[1, 2, 3]]})
        dims = await post({"input": "data:audio/wav;base64,AAAA", "dimensions": 3})
    assert (not_base64.status_code, _error(not_base64)) == (422, "invalid_input")
    assert (text.status_code, _error(text)) == (415, "unsupported_media_type")
    assert (garbage.status_code, _error(garbage)) == (400, "undecodable_audio")
    assert (tokens.status_code, _error(tokens)) == (422, "invalid_parameters")
    assert (dims.status_code, _error(dims)) == (422, "invalid_input")


async def test_api_keys_protect_everything_but_probes_and_metrics(tiny_bundle, tmp_path) -> None:
    clip = (AUDIO_DIR / "drum_snare.flac").read_bytes()
    async with serving(make_settings(tmp_path, api_keys=["k1", "k2"]), [tiny_bundle.path]) as client:
        missing = await client.post("/v1/embed", content=clip)
        wrong = await client.post("/v1/embed", content=clip, headers={"authorization": "Bearer k3"})
        models = await client.get("/v1/models")
        right = await client.post("/v1/embed", content=clip, headers={"authorization": "Bearer k2"})
        open_paths = [await client.get(path) for path in ("/healthz", "/readyz", "/metrics", "/openapi.json")]
    for response in (missing, wrong, models):
        assert response.status_code == 401 and _error(response) == "unauthorized"
        assert response.headers["www-authenticate"] == "Bearer"
    assert right.status_code == 200
    assert [r.status_code for r in open_paths] == [200, 200, 200, 200]


async def test_models_list_and_openapi(tiny_bundle, tmp_path) -> None:
    async with serving(make_settings(tmp_path), [tiny_bundle.path]) as client:
        models = (await client.get("/v1/models")).json()
        openapi = (await client.get("/openapi.json")).json()
        docs = await client.get("/docs")
    assert models["object"] == "list"
    (card,) = models["data"]
    assert card["id"] == "tiny" and card["embedding_dim"] == 8 and card["default"] is True
    assert card["providers"] == ["CPUExecutionProvider"]
    assert {"/v1/embed", "/v1/embeddings", "/v1/models", "/healthz", "/readyz", "/metrics"} <= set(openapi["paths"])
    assert "multipart/form-data" in openapi["paths"]["/v1/embed"]["post"]["requestBody"]["content"]
    assert docs.status_code == 200


async def test_metrics_are_prometheus_text_with_earshot_names(tiny_bundle, tmp_path) -> None:
    async with serving(make_settings(tmp_path), [tiny_bundle.path]) as client:
        await client.post("/v1/embed", content=(AUDIO_DIR / "choir.flac").read_bytes())
        await client.post("/v1/embed", content=b"nonsense")
        response = await client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    found = names(text)
    assert all(name.startswith("earshot_") for name in found if not name.startswith(("python_", "process_")))
    for expected in (
        "earshot_batch_size", "earshot_requests", "earshot_request_duration_seconds", "earshot_queue_wait_seconds",
        "earshot_inference_seconds", "earshot_queued_windows", "earshot_audio_seconds", "earshot_decode_seconds",
        "earshot_errors", "earshot_ready",
    ):
        assert expected in found, expected
    assert sample(text, "earshot_requests_total", endpoint="/v1/embed", model="tiny", status="200") >= 1
    assert sample(text, "earshot_errors_total", code="undecodable_audio") >= 1
    assert sample(text, "earshot_audio_seconds_total", model="tiny") >= 1.57
    assert sample(text, "earshot_ready") == 1


async def test_readiness_follows_the_engine(tiny_bundle, tmp_path) -> None:
    app = create_app(make_settings(tmp_path), [tiny_bundle.path])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://earshot") as client:
        before = await client.get("/readyz")  # lifespan not started: nothing loaded yet
        alive = await client.get("/healthz")
        early = await client.post("/v1/embed", content=b"x")
        assert (before.status_code, _error(before)) == (503, "not_ready")
        assert alive.status_code == 200
        assert (early.status_code, _error(early)) == (503, "not_ready")
        async with app.router.lifespan_context(app):
            while app.state.lifecycle.engine is None or not app.state.lifecycle.ready:
                await asyncio.sleep(0.005)
            ready = await client.get("/readyz")
            assert ready.status_code == 200 and ready.json()["models"] == ["tiny"]
        after = await client.get("/readyz")
        assert after.status_code == 503


async def test_a_failed_start_is_reported_by_the_probes(tmp_path) -> None:
    app = create_app(make_settings(tmp_path), [tmp_path / "no-such-bundle"])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://earshot") as client:
        async with app.router.lifespan_context(app):
            while app.state.lifecycle.failure is None:
                await asyncio.sleep(0.005)
            health = await client.get("/healthz")
            ready = await client.get("/readyz")
    assert health.status_code == 503 and "no-such-bundle" in health.json()["error"]["message"]
    assert ready.status_code == 503
