"""Search: `earshot index` over a catalog of real clips (and a synthetic 20k-vector catalog) agrees
with exact brute-force search; incremental growth; /v1/search over HTTP and its errors.

The truth everywhere is exact float64 brute force over the catalog's own embeddings.
"""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from earshot.cli import main
from earshot.search.build import build_index
from earshot.search.directory import IndexDirectoryError, open_index
from tests.service.conftest import make_settings, serving

GOOD = ["speech_french.ogg", "bird_crow.ogg", "drum_kick.flac", "music_piano.flac", "choir.flac",
        "music_guitar.flac", "tabla.flac", "mammal_sheep.ogg", "silence_1s.wav", "speech_spanish_16s.ogg"]
BAD = ["truncated.ogg", "random_bytes.wav", "empty.wav"]


@pytest.fixture(scope="module")
def catalog(tmp_path_factory, audio_dir: Path, tiny_bundle) -> Path:
    """The tiny bundle's catalog of real clips, two undecodable files among them (error rows)."""
    root = tmp_path_factory.mktemp("search-catalog")
    clips = root / "clips"
    clips.mkdir()
    for name in GOOD:
        shutil.copy(audio_dir / name, clips / name)
    for name in BAD:
        shutil.copy(audio_dir / "bad" / name, clips / name)
    out = root / "catalog.parquet"
    assert main(["embed", str(clips), "--bundle", str(tiny_bundle.path), "--out", str(out), "--workers", "1"]) in (0, 1)
    return out


def good_rows(catalog: Path) -> tuple[list[str], np.ndarray]:
    rows = [row for row in pq.read_table(catalog).to_pylist() if row["error"] is None]
    return [row["path"] for row in rows], np.array([row["embedding"] for row in rows], dtype=np.float64)


def exact_top_k(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k rows of highest cosine to each query, exact (float64)."""
    vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    return np.argsort(-(queries @ vectors.T), axis=1, kind="stable")[:, :k]


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)]))


def test_index_of_real_clips_agrees_with_brute_force(catalog, tmp_path, capsys):
    assert main(["index", str(catalog), "--out", str(tmp_path / "index")]) == 0
    report = json.loads(capsys.readouterr().out)
    paths, vectors = good_rows(catalog)
    errors = pq.read_table(catalog).num_rows - len(paths)
    assert errors >= 1  # the undecodable files are rows with errors, skipped
    assert (report["added"], report["skipped_errors"], report["count"]) == (len(paths), errors, len(paths))
    index = open_index(tmp_path / "index")
    assert index.meta.model == "tiny" and index.meta.embedding_dim == vectors.shape[1]
    rng = np.random.default_rng(0)
    queries = vectors + 0.05 * rng.standard_normal(vectors.shape) * np.abs(vectors).mean()
    k = min(10, len(paths))
    keys, scores = index.vectors.search(queries.astype(np.float32), k)
    found = np.array([[paths.index(str(index.paths[int(key)])) for key in row] for row in keys])
    assert recall_at(found, exact_top_k(vectors, queries, k)) >= 0.95
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first


def test_a_grown_catalog_adds_only_its_new_rows(catalog, tmp_path):
    table = pq.read_table(catalog)
    half = tmp_path / "half.parquet"
    pq.write_table(table.slice(0, table.num_rows // 2), half)
    first = build_index(half, tmp_path / "index")
    files_before = {p.name for p in (tmp_path / "index").iterdir()}
    grown = build_index(catalog, tmp_path / "index")
    paths, _ = good_rows(catalog)
    assert grown.already_indexed == first.added and first.added + grown.added == len(paths) == grown.count
    files_after = {p.name for p in (tmp_path / "index").iterdir()}
    assert files_after != files_before and len(files_after) == 3  # index.json + this generation's two files
    again = build_index(catalog, tmp_path / "index")
    assert (again.added, again.already_indexed, again.count) == (0, len(paths), len(paths))
    index = open_index(tmp_path / "index")
    assert sorted(index.paths.to_pylist()) == sorted(paths) and len(index.meta.sources) == 2
    rebuilt = build_index(catalog, tmp_path / "index", rebuild=True)
    assert (rebuilt.added, rebuilt.count) == (len(paths), len(paths))


def synthetic_catalog(path: Path, count: int, dim: int, seed: int, model: str = "synthetic") -> np.ndarray:
    """Clustered unit vectors (like embeddings, not uniform noise) as a catalog Parquet; returns them."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((count // 50, dim))
    vectors = centres[rng.integers(0, len(centres), count)] + 0.6 * rng.standard_normal((count, dim))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    table = pa.table({
        "path": [f"/catalog/{i:06d}.flac" for i in range(count)],
        "model": [model] * count,
        "embedding": pa.array(list(vectors), type=pa.list_(pa.float32(), dim)),
        "error": pa.array([None] * count, type=pa.string()),
    })
    pq.write_table(table, path)
    return vectors


def test_a_20k_vector_index_has_recall_at_10_above_095(tmp_path):
    vectors = synthetic_catalog(tmp_path / "synthetic.parquet", 20_000, 64, seed=1)
    build_index(tmp_path / "synthetic.parquet", tmp_path / "index")
    index = open_index(tmp_path / "index")
    rng = np.random.default_rng(2)
    queries = vectors[rng.integers(0, len(vectors), 200)] + 0.3 * rng.standard_normal((200, 64)).astype(np.float32)
    keys, _ = index.vectors.search(queries, 10)
    assert recall_at(keys, exact_top_k(vectors.astype(np.float64), queries.astype(np.float64), 10)) >= 0.95


def test_index_refuses_what_it_cannot_index(catalog, tmp_path):
    with pytest.raises(IndexDirectoryError, match="no such catalog"):
        build_index(tmp_path / "absent.parquet", tmp_path / "index")
    pq.write_table(pa.table({"path": ["a"]}), tmp_path / "other.parquet")
    with pytest.raises(IndexDirectoryError, match="not an earshot catalog"):
        build_index(tmp_path / "other.parquet", tmp_path / "index")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(IndexDirectoryError, match="not a readable Parquet"):
        build_index(tmp_path / "junk.parquet", tmp_path / "index")
    build_index(catalog, tmp_path / "index")
    synthetic_catalog(tmp_path / "synthetic.parquet", 200, 8, seed=3, model="another")
    with pytest.raises(IndexDirectoryError, match="one index per model"):
        build_index(tmp_path / "synthetic.parquet", tmp_path / "index")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file.txt").write_text("mine")
    with pytest.raises(IndexDirectoryError, match="not an index directory"):
        build_index(catalog, tmp_path / "busy")
    assert main(["index", str(tmp_path / "absent.parquet"), "--out", str(tmp_path / "x")]) == 2


def data_uri(path: Path) -> str:
    return "data:audio/flac;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


@pytest.mark.anyio
async def test_search_over_http(catalog, tiny_bundle, audio_dir, tmp_path):
    build_index(catalog, tmp_path / "clips-index")
    paths, _ = good_rows(catalog)
    settings = make_settings(tmp_path, indexes=[str(tmp_path / "clips-index")])
    async with serving(settings, [tiny_bundle.path]) as client:
        response = await client.post("/v1/search", json={"model": "tiny", "audio": data_uri(audio_dir / "music_piano.flac"), "k": 3})
        everything = await client.post("/v1/search", json={"audio": data_uri(audio_dir / "choir.flac"), "k": 1000})
        named = await client.post("/v1/search", json={"audio": data_uri(audio_dir / "choir.flac"), "index": "clips-index"})
        errors = {
            "text on a model without a text tower": await client.post("/v1/search", json={"query": "a dog"}),
            "unknown index": await client.post("/v1/search", json={"query": "a dog", "index": "nope"}),
            "k = 0": await client.post("/v1/search", json={"audio": data_uri(audio_dir / "choir.flac"), "k": 0}),
            "k huge": await client.post("/v1/search", json={"audio": data_uri(audio_dir / "choir.flac"), "k": 10**6}),
            "neither": await client.post("/v1/search", json={"k": 3}),
            "both": await client.post("/v1/search", json={"query": "x", "audio": data_uri(audio_dir / "choir.flac")}),
            "not base64": await client.post("/v1/search", json={"audio": "data:audio/wav;base64,@@@"}),
            "undecodable": await client.post(
                "/v1/search", json={"audio": data_uri(audio_dir / "bad" / "random_bytes.wav")}
            ),
            "unknown model": await client.post("/v1/search", json={"model": "nope", "query": "x"}),
            "unknown field": await client.post("/v1/search", json={"query": "x", "limit": 3}),
        }
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["model"], body["index"], len(body["results"])) == ("tiny", "clips-index", 3)
    assert body["results"][0]["path"].endswith("music_piano.flac")
    assert body["results"][0]["score"] == pytest.approx(1.0, abs=1e-3)
    scores = [hit["score"] for hit in body["results"]]
    assert scores == sorted(scores, reverse=True)
    assert len(everything.json()["results"]) == len(paths)  # k past the index's size: all of it
    assert named.status_code == 200 and named.json()["results"][0]["path"].endswith("choir.flac")
    expected = {
        "text on a model without a text tower": (422, "no_text_tower"),
        "unknown index": (404, "index_not_found"),
        "k = 0": (422, "invalid_parameters"),
        "k huge": (422, "invalid_parameters"),
        "neither": (422, "invalid_input"),
        "both": (422, "invalid_input"),
        "not base64": (422, "invalid_input"),
        "undecodable": (400, "undecodable_audio"),
        "unknown model": (404, "model_not_found"),
        "unknown field": (422, "invalid_parameters"),
    }
    for what, answer in errors.items():
        assert (answer.status_code, answer.json()["error"]["code"]) == expected[what], (what, answer.text)


@pytest.mark.anyio
async def test_text_and_labels_on_a_model_without_a_text_tower_get_422(tiny_bundle, audio_dir, tmp_path):
    async with serving(make_settings(tmp_path), [tiny_bundle.path]) as client:
        text = await client.post("/v1/embeddings", json={"model": "tiny", "input": ["a dog"], "modality": "text"})
        labels = await client.post(
            "/v1/embed?labels=dog&labels=cat", content=(audio_dir / "bird_crow.ogg").read_bytes(),
            headers={"content-type": "audio/ogg"},
        )
        no_index = await client.post("/v1/search", json={"audio": data_uri(audio_dir / "choir.flac")})
    for response in (text, labels):
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == "no_text_tower"
        assert "no text tower" in response.json()["error"]["message"]
    assert (no_index.status_code, no_index.json()["error"]["code"]) == (404, "index_not_found")


@pytest.mark.anyio
async def test_an_index_of_a_model_not_served_fails_startup(tiny_bundle, tmp_path):
    from earshot.api.app import create_app

    synthetic_catalog(tmp_path / "other.parquet", 100, 8, seed=4, model="another")
    build_index(tmp_path / "other.parquet", tmp_path / "other-index")
    app = create_app(make_settings(tmp_path, indexes=[str(tmp_path / "other-index")]), [tiny_bundle.path])
    async with app.router.lifespan_context(app):
        lifecycle = app.state.lifecycle
        for _ in range(2000):
            if lifecycle.failure:
                break
            import asyncio

            await asyncio.sleep(0.005)
    assert lifecycle.failure and "model 'another'" in lifecycle.failure and "does not serve" in lifecycle.failure
