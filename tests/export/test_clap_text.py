"""CLAP as a whole service: the text tower in the bundle, text embeddings over HTTP (Infinity's
`modality`), zero-shot labels chosen per request, and search by text over a catalog index.

References: transformers' ClapModel (`get_text_features`, `logits_per_audio`) with the checkpoint's
own tokenizer; the random tiny CLAP and its tokenizer are made here (tests/models/clap_fixtures.py).
"""

from __future__ import annotations

import base64

import httpx
import numpy as np
import openai
import pytest
import torch

from earshot import bundle
from earshot.cli import main
from tests.models.clap_fixtures import UNFUSED_EXTRACTOR, make_clap_dir, read_clip
from tests.service.conftest import make_settings, serving

DEFAULT_LABELS = ["speech", "music"]
TEXTS = [
    "a dog barking in the rain",
    "music",
    "This is a sound of speech.",
    # longer than the tiny model's 38 positions: cut at max_tokens, as the tokenizer cuts it
    " ".join(["the sound of rain and a bird"] * 8),
]
CLIPS = ("speech_french.ogg", "music_piano.flac", "bird_crow.ogg", "drum_kick.flac", "short_50ms.wav")


@pytest.fixture(scope="module")
def clap(tmp_path_factory):
    directory = tmp_path_factory.mktemp("clap-text") / "clap-tiny"
    return directory, make_clap_dir(directory, seed=11)


@pytest.fixture(scope="module")
def exported(clap, tmp_path_factory) -> bundle.Bundle:
    directory, _ = clap
    root = tmp_path_factory.mktemp("clap-text-bundle")
    labels = root / "labels.txt"
    labels.write_text("\n".join(DEFAULT_LABELS) + "\n", encoding="utf-8")
    assert main(["export", f"hf:{directory}", "--out", str(root / "clap"), "--labels", str(labels)]) == 0
    return bundle.load(root / "clap", verify=True)


def reference_text(clap, texts: list[str], max_tokens: int) -> np.ndarray:
    """get_text_features (normalised), tokenised by transformers with the checkpoint's tokenizer."""
    from transformers import AutoTokenizer

    directory, model = clap
    tokens = AutoTokenizer.from_pretrained(directory)(
        texts, padding=True, truncation=True, max_length=max_tokens, return_tensors="pt"
    )
    with torch.no_grad():
        return model.get_text_features(**tokens).pooler_output.numpy()


def reference_logits(clap, clip: np.ndarray, prompts: list[str]) -> np.ndarray:
    """transformers' logits_per_audio (1, C) of one clip of at most one window."""
    from transformers import AutoTokenizer, ClapFeatureExtractor

    directory, model = clap
    features = ClapFeatureExtractor(**UNFUSED_EXTRACTOR)([clip], sampling_rate=48000, return_tensors="pt")
    tokens = AutoTokenizer.from_pretrained(directory)(prompts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(input_features=features["input_features"].float(), **tokens).logits_per_audio.numpy()


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def test_the_bundle_carries_the_text_tower(exported):
    manifest = exported.manifest
    text = manifest.text
    assert text is not None and manifest.has_text
    assert {text.model_file, text.tokenizer_file} <= set(manifest.files)
    assert text.prompt == "This is a sound of {}." and text.pad_id == 1
    assert text.max_tokens == 40 - 1 - 1  # the tiny RoBERTa's 40 positions, from pad_token_id + 1
    assert text.logit_scale == pytest.approx(30.0, rel=1e-6)
    assert text.parity["passed"] and text.parity["min_cosine"] >= 0.99999
    assert manifest.summary()["modalities"] == ["audio", "text"]


def test_a_changed_tokenizer_is_refused(exported, tmp_path):
    import shutil

    copy = tmp_path / "clap-edited"
    shutil.copytree(exported.path, copy)
    tokenizer = copy / bundle.TOKENIZER_FILE
    tokenizer.write_text(tokenizer.read_text(encoding="utf-8").replace('"<pad>"', '"<PAD>"'), encoding="utf-8")
    with pytest.raises(bundle.BundleError, match="checksum mismatch for tokenizer.json"):
        bundle.load(copy, verify=True)


@pytest.mark.anyio
async def test_text_embeddings_over_http_match_get_text_features(clap, exported, tmp_path):
    expected = reference_text(clap, TEXTS, exported.manifest.text.max_tokens)
    name = exported.manifest.name
    async with serving(make_settings(tmp_path), [exported.path]) as client:
        response = await client.post("/v1/embeddings", json={"model": name, "input": TEXTS, "modality": "text"})
        single = await client.post("/v1/embeddings", json={"model": name, "input": TEXTS[0], "modality": "text"})
        packed = await client.post(
            "/v1/embeddings", json={"model": name, "input": TEXTS[:2], "modality": "text", "encoding_format": "base64"}
        )
        api = openai.AsyncOpenAI(
            base_url="http://earshot/v1", api_key="none", http_client=httpx.AsyncClient(
                transport=httpx.ASGITransport(app=client.app), base_url="http://earshot"
            )
        )
        from_client = await api.embeddings.create(model=name, input=TEXTS[:3], extra_body={"modality": "text"})
        models = (await client.get("/v1/models")).json()["data"]
    assert response.status_code == 200, response.text
    body = response.json()
    got = np.array([item["embedding"] for item in body["data"]], dtype=np.float32)
    assert [item["index"] for item in body["data"]] == list(range(len(TEXTS)))
    cosine = (got * expected).sum(axis=1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)
    assert cosine.min() >= 0.9999, cosine
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert body["usage"]["prompt_tokens"] > len(TEXTS)
    np.testing.assert_allclose(single.json()["data"][0]["embedding"], expected[0], atol=1e-5)
    decoded = np.frombuffer(base64.b64decode(packed.json()["data"][1]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(decoded, expected[1], atol=1e-5)
    np.testing.assert_allclose([item.embedding for item in from_client.data], expected[:3], atol=1e-5)
    assert [m["modalities"] for m in models] == [["audio", "text"]]


@pytest.mark.anyio
async def test_zero_shot_labels_per_request_match_logits_per_audio(clap, exported, audio_dir, tmp_path):
    labels = ["dog", "rain", "bird", "music"]
    prompt = "the sound of {}"
    name = exported.manifest.name
    async with serving(make_settings(tmp_path), [exported.path]) as client:
        answers = {}
        for clip_name in ("music_piano.flac", "bird_crow.ogg"):
            query = "&".join(f"labels={label}" for label in labels)
            answers[clip_name] = await client.post(
                f"/v1/embed?model={name}&{query}&prompt={prompt}&top_k=4&windows=true",
                content=(audio_dir / clip_name).read_bytes(), headers={"content-type": "application/octet-stream"},
            )
        default_tags = await client.post(
            f"/v1/embed?model={name}", content=(audio_dir / "music_piano.flac").read_bytes(),
            headers={"content-type": "audio/flac"},
        )
        top_one = await client.post(
            f"/v1/embed?model={name}&labels=dog&labels=rain&top_k=1", content=(audio_dir / "bird_crow.ogg").read_bytes(),
            headers={"content-type": "audio/ogg"},
        )
        metrics = (await client.get("/metrics")).text
    for clip_name, response in answers.items():
        assert response.status_code == 200, response.text
        body = response.json()
        clip = read_clip(audio_dir / clip_name)
        assert len(clip) <= exported.manifest.window_samples  # one window: the clip's tags are the window's
        expected = softmax(reference_logits(clap, clip, [prompt.format(label) for label in labels]))[0]
        scores = {tag["label"]: tag["score"] for tag in body["tags"]}
        assert sorted(scores) == sorted(labels)
        np.testing.assert_allclose([scores[label] for label in labels], expected, atol=1e-4)
        assert [tag["label"] for tag in body["tags"]] == [labels[i] for i in np.argsort(-expected, kind="stable")]
        assert body["windows"][0]["tags"] == body["tags"]
    assert [tag["label"] for tag in default_tags.json()["tags"]] != []  # the export-time labels stay the default
    assert {tag["label"] for tag in default_tags.json()["tags"]} == set(DEFAULT_LABELS)
    assert len(top_one.json()["tags"]) == 1
    hits = [line for line in metrics.splitlines() if line.startswith("earshot_label_cache_total")]
    assert any('result="hit"' in line and not line.endswith(" 0.0") for line in hits), hits


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("request_body", "code"),
    [
        ({"input": [], "modality": "text"}, "invalid_text"),
        ({"input": [""], "modality": "text"}, "invalid_text"),
        ({"input": ["ok", "   "], "modality": "text"}, "invalid_text"),
        ({"input": ["x" * 10001], "modality": "text"}, "invalid_text"),
        ({"input": "music", "modality": "video"}, "invalid_parameters"),
    ],
)
async def test_bad_text_requests_get_422(exported, tmp_path, request_body, code):
    async with serving(make_settings(tmp_path), [exported.path]) as client:
        response = await client.post("/v1/embeddings", json={"model": exported.manifest.name, **request_body})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == code


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("labels=dog&labels=dog", "invalid_text"),
        ("labels=", "invalid_text"),
        ("labels=dog&prompt=no%20placeholder", "invalid_text"),
        ("labels=dog&prompt=%7B%7D%20and%20%7B%7D", "invalid_text"),
    ],
)
async def test_bad_label_requests_get_422(exported, audio_dir, tmp_path, query, code):
    async with serving(make_settings(tmp_path), [exported.path]) as client:
        response = await client.post(
            f"/v1/embed?model={exported.manifest.name}&{query}", content=(audio_dir / "bird_crow.ogg").read_bytes(),
            headers={"content-type": "audio/ogg"},
        )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == code


@pytest.mark.anyio
async def test_search_by_text_over_a_catalog_of_real_clips(clap, exported, audio_dir, tmp_path):
    """earshot embed -> earshot index -> /v1/search {"query"}: the order of exact cosine between the
    catalog's clip embeddings and transformers' text embedding of the query."""
    import asyncio
    import shutil

    import pyarrow.parquet as pq

    clips = tmp_path / "clips"
    clips.mkdir()
    for name in CLIPS:
        shutil.copy(audio_dir / name, clips / name)
    catalog = tmp_path / "catalog.parquet"
    embed = ["embed", str(clips), "--bundle", str(exported.path), "--out", str(catalog), "--workers", "1"]
    assert await asyncio.to_thread(main, embed) == 0  # the catalog job runs its own event loop
    assert main(["index", str(catalog), "--out", str(tmp_path / "sounds")]) == 0
    rows = pq.read_table(catalog).to_pylist()
    vectors = np.array([row["embedding"] for row in rows], dtype=np.float64)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    query = "a dog barking in the rain"
    text = reference_text(clap, [query], exported.manifest.text.max_tokens)[0].astype(np.float64)
    expected = [rows[i]["path"] for i in np.argsort(-(vectors @ text), kind="stable")]
    settings = make_settings(tmp_path, indexes=[str(tmp_path / "sounds")])
    async with serving(settings, [exported.path]) as client:
        response = await client.post("/v1/search", json={"model": exported.manifest.name, "query": query, "k": 3})
        empty = await client.post("/v1/search", json={"model": exported.manifest.name, "query": "  "})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["index"] == "sounds" and [hit["path"] for hit in body["results"]] == expected[:3]
    np.testing.assert_allclose(
        [hit["score"] for hit in body["results"]], np.sort(vectors @ text)[::-1][:3], atol=2e-3  # f16 vectors
    )
    assert (empty.status_code, empty.json()["error"]["code"]) == (422, "invalid_text")


@pytest.mark.anyio
async def test_text_requests_share_batches(clap, exported, tmp_path):
    import asyncio
    import re

    name = exported.manifest.name
    expected = reference_text(clap, TEXTS[:3], exported.manifest.text.max_tokens)
    def batches_run(metrics: str) -> float:
        found = re.findall(rf'earshot_text_inference_seconds_count{{model="{name}"}} (\S+)', metrics)
        return float(found[0]) if found else 0.0

    async with serving(make_settings(tmp_path, max_wait_ms=100.0), [exported.path]) as client:
        before = batches_run((await client.get("/metrics")).text)  # metrics are the process's
        answers = await asyncio.gather(*(
            client.post("/v1/embeddings", json={"model": name, "input": [text], "modality": "text"})
            for text in TEXTS[:3] * 2
        ))
        metrics = (await client.get("/metrics")).text
    for answer, row in zip(answers, [*expected, *expected], strict=True):
        np.testing.assert_allclose(answer.json()["data"][0]["embedding"], row, atol=1e-5)
    assert 1 <= batches_run(metrics) - before < 6  # six requests, fewer batches


def test_the_text_tower_self_test_refuses_a_tokenizer_that_changed(exported, tmp_path):
    """At load, the tokenizer must give the export's token ids for the probe's texts: a bundle whose
    tokenizer cuts differently (here: max_tokens 3) is refused, with the text named."""
    import dataclasses
    import shutil

    import numpy as np

    from earshot.engine import Engine
    from earshot.engine.config import EngineConfig
    from earshot.engine.runner import RunnerConfig
    from earshot.engine.text import TextEncoder, TextSelfTestFailed

    config = RunnerConfig(providers=("cpu",), intra_op_threads=1, max_batch_windows=2, cache_dir=tmp_path)
    TextEncoder(exported, config).self_test()  # the bundle as made passes
    with np.load(exported.path / bundle.TEXT_PROBE_FILE) as probe:
        assert list(probe["texts"])[:1] == ["a dog barking in the rain"] and probe["embedding"].shape[1] == 24
    copy = tmp_path / "changed"
    shutil.copytree(exported.path, copy)
    (copy / bundle.MANIFEST_FILE).unlink()
    manifest = dataclasses.replace(exported.manifest, text=dataclasses.replace(exported.manifest.text, max_tokens=3))
    changed = bundle.write(copy, manifest, exported.labels)
    with pytest.raises(TextSelfTestFailed, match="other ids than at export for 'a dog barking in the rain'"):
        TextEncoder(changed, config).self_test()

    async def start() -> None:  # the engine runs the check for every text tower it loads
        async with Engine([changed.path], EngineConfig(cache_dir=tmp_path, threads=1)):
            pass

    import asyncio

    with pytest.raises(TextSelfTestFailed):
        asyncio.run(start())
