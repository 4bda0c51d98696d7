"""The engine as a library: pooling, batching across requests, admission, deadlines, cancellation."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from earshot import bundle as bundle_format
from earshot.engine import Engine
from earshot.engine.errors import DeadlineExceeded, Draining, NotReady, QueueFull, UnknownModel
from earshot.engine.pooling import tag_scores
from earshot.engine.windows import cut, window_spec
from tests.service.conftest import make_config
from tests.service.small_bundles import LABELS, SAMPLE_RATE, WINDOW_SAMPLES, pooled, tiny_reference

pytestmark = pytest.mark.anyio
AUDIO_DIR = Path(__file__).resolve().parents[2] / ".." / "shared" / "audio"


def _clip(seconds: float, seed: int = 0) -> np.ndarray:
    return (0.3 * np.random.default_rng(seed).standard_normal(int(seconds * SAMPLE_RATE))).astype(np.float32)


def _expected(bundle: bundle_format.Bundle, waveform: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    manifest = bundle.manifest
    windows = cut(waveform, window_spec(manifest))
    return tiny_reference(np.asarray(windows.samples), windows.num_samples)


def _expected_clip(bundle: bundle_format.Bundle, waveform: np.ndarray) -> np.ndarray:
    manifest = bundle.manifest
    return pooled(_expected(bundle, waveform)[0], len(waveform), manifest.window_samples, manifest.hop_samples)


async def test_clip_results_pool_the_window_outputs(tiny_bundle, tmp_path) -> None:
    waveform = _clip(0.83)
    embedding, logits = _expected(tiny_bundle, waveform)  # (n, 8), (n, 4)
    scores = 1 / (1 + np.exp(-logits.astype(np.float64)))
    async with Engine([tiny_bundle.path], make_config(tmp_path)) as engine:
        assert engine.ready and engine.models == ["tiny"]
        result = await engine.embed(waveform, "tiny", top_k=3, windows=True)
    assert result.model == "tiny" and result.num_windows == embedding.shape[0] == 16
    assert result.duration_s == pytest.approx(0.83)
    # The last window reaches 0.03 s past the one before it (of a 0.05 s hop): it weighs 0.6.
    np.testing.assert_allclose(result.embedding, pooled(embedding, len(waveform)), rtol=1e-5, atol=1e-5)
    clip_scores = pooled(scores, len(waveform))
    best = np.argsort(-clip_scores)[:3]
    assert [tag.label for tag in result.tags] == [LABELS[i] for i in best]
    np.testing.assert_allclose([tag.score for tag in result.tags], clip_scores[best], rtol=1e-5)
    assert result.windows is not None and len(result.windows) == 16
    for index, window in enumerate(result.windows):
        np.testing.assert_allclose(window.embedding, embedding[index], rtol=1e-5, atol=1e-5)
        assert window.start_s == pytest.approx(index * 0.05)
        assert window.end_s == pytest.approx(min(index * 0.05 + 0.1, 0.83))
        assert window.tags[0].label == LABELS[int(np.argmax(scores[index]))]
    assert result.queue_time_ms >= 0 and result.inference_time_ms >= 0


async def test_whole_windows_pool_to_the_plain_mean_and_a_short_tail_counts_for_its_samples(tiny_bundle, tmp_path) -> None:
    # Whole windows (0.8 s = 15 windows of 0.1 s at 0.05 s hops): the plain mean, as the references take it.
    whole = _clip(0.8, seed=3)
    tail = 8  # samples appended: a 16th window of 8 real samples (0.5 ms) and zeros
    longer = np.concatenate([whole, _clip(1.0, seed=4)[:tail]])
    embedding, _ = _expected(tiny_bundle, whole)
    async with Engine([tiny_bundle.path], make_config(tmp_path)) as engine:
        first = await engine.embed(whole, "tiny")
        second = await engine.embed(longer, "tiny", windows=True)
    assert first.num_windows == 15 and second.num_windows == 16
    np.testing.assert_allclose(first.embedding, embedding.mean(axis=0), rtol=1e-5, atol=1e-5)
    # The 16th window reaches 8 samples past the 15th (of an 800-sample hop): it weighs 0.01 against
    # 15 whole windows, so the clip moves by that share of the distance to it, not by 1/16 of it as a
    # plain mean would move it.
    last = second.windows[-1].embedding
    share = (tail / (WINDOW_SAMPLES // 2)) / (15 + tail / (WINDOW_SAMPLES // 2))
    np.testing.assert_allclose(second.embedding, first.embedding + share * (last - first.embedding), rtol=1e-5, atol=1e-5)
    assert np.abs(second.embedding - first.embedding).max() < 0.01 * np.abs(last - first.embedding).max()
    plain = (15 * first.embedding + last) / 16
    assert np.abs(plain - first.embedding).max() > 0.05 * np.abs(last - first.embedding).max()


async def test_batched_results_equal_results_alone(tiny_bundle, tmp_path) -> None:
    clips = [_clip(0.05 + 0.13 * i, seed=i) for i in range(24)]
    async with Engine([tiny_bundle.path], make_config(tmp_path, max_wait_ms=0.0)) as engine:
        alone = [await engine.embed(clip, "tiny") for clip in clips]
    settings = make_config(tmp_path, max_wait_ms=50.0, max_batch_windows=16)
    async with Engine([tiny_bundle.path], settings) as engine:
        together = await asyncio.gather(*(engine.embed(clip, "tiny") for clip in clips))
        batches = engine.batches_run("tiny")
    windows = sum(result.num_windows for result in together)
    assert batches < windows / 2, "concurrent requests should share batches"
    for one, shared, clip in zip(alone, together, clips, strict=True):
        np.testing.assert_allclose(shared.embedding, one.embedding, atol=1e-5)
        np.testing.assert_allclose(shared.embedding, _expected_clip(tiny_bundle, clip), atol=1e-5)


async def test_default_alias_and_unknown_models(tiny_bundle, tmp_path) -> None:
    async with Engine([tiny_bundle], make_config(tmp_path)) as engine:
        assert engine.resolve(None) == engine.resolve("default") == "tiny"
        result = await engine.embed(_clip(0.2), "default")
        assert result.model == "tiny"
        with pytest.raises(UnknownModel):
            await engine.embed(_clip(0.2), "nope")


async def test_a_bundle_with_a_wrong_checksum_is_refused(tiny_bundle, tmp_path) -> None:
    copy = tmp_path / "tampered"
    copy.mkdir()
    for item in tiny_bundle.path.iterdir():
        copy.joinpath(item.name).write_bytes(item.read_bytes())
    labels = copy / "labels.csv"
    labels.write_text(labels.read_text().replace("Bird", "Birb"))
    engine = Engine([copy], make_config(tmp_path))
    with pytest.raises(bundle_format.BundleError, match="checksum"):
        await engine.start()
    with pytest.raises(NotReady):
        await engine.embed(_clip(0.1))


async def test_a_full_queue_refuses_at_once_with_a_retry_hint(slow_bundle, tmp_path) -> None:
    settings = make_config(tmp_path, max_queued_windows=20, max_batch_windows=4, request_timeout_s=60)
    async with Engine([slow_bundle.path], settings) as engine:
        big = asyncio.create_task(engine.embed(_clip(6.0), "slow"))  # 60 windows: admitted whole
        while engine.queued_windows("slow") == 0:
            await asyncio.sleep(0.001)
        assert engine.queued_windows("slow") > 20
        with pytest.raises(QueueFull) as caught:
            await engine.embed(_clip(0.1), "slow")
        assert caught.value.retry_after_s >= 1
        big.cancel()
        await asyncio.gather(big, return_exceptions=True)
        assert engine.queued_windows("slow") == 0
        await engine.embed(_clip(0.1), "slow")  # room again


async def test_a_request_past_its_deadline_fails_and_its_windows_are_dropped(slow_bundle, tmp_path) -> None:
    settings = make_config(tmp_path, max_batch_windows=4, request_timeout_s=0.2)
    async with Engine([slow_bundle.path], settings) as engine:
        with pytest.raises(DeadlineExceeded):
            await engine.embed(_clip(30.0), "slow")  # 300 windows, seconds of work
        assert engine.queued_windows("slow") == 0
        dropped = engine.dropped_windows("slow")["deadline"]
        assert dropped > 250
        await engine.drain()
        assert engine.windows_run("slow") + dropped == 300  # every window ran once, or was dropped


async def test_a_cancelled_request_has_its_windows_dropped(slow_bundle, tmp_path) -> None:
    settings = make_config(tmp_path, max_batch_windows=4, request_timeout_s=60)
    async with Engine([slow_bundle.path], settings) as engine:
        task = asyncio.create_task(engine.embed(_clip(30.0), "slow"))
        while engine.windows_run("slow") == 0:
            await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert engine.queued_windows("slow") == 0
        await engine.drain()
        dropped = engine.dropped_windows("slow")["cancelled"]
        assert dropped > 0
        assert engine.windows_run("slow") + dropped == 300


async def test_drain_finishes_admitted_work_and_refuses_new(tiny_bundle, tmp_path) -> None:
    async with Engine([tiny_bundle.path], make_config(tmp_path, max_wait_ms=20.0)) as engine:
        admitted = [asyncio.create_task(engine.embed(_clip(1.0, seed=i), "tiny")) for i in range(8)]
        await asyncio.sleep(0)  # let them be admitted
        assert await engine.drain(timeout_s=30)
        assert all(task.done() and task.result().num_windows == 19 for task in admitted)
        assert not engine.ready
        with pytest.raises(Draining):
            await engine.embed(_clip(0.1), "tiny")


async def test_every_clip_embeds_and_variants_of_one_loop_agree(tiny_bundle, tmp_path) -> None:
    variants = sorted(AUDIO_DIR.glob("variant_*")) + [AUDIO_DIR / "music_drum_loop.flac"]
    async with Engine([tiny_bundle.path], make_config(tmp_path)) as engine:
        embeddings = []
        for path in variants:
            result = await engine.embed_audio(path.read_bytes(), "tiny")
            assert result.duration_s == pytest.approx(1.7533, abs=0.001)
            embeddings.append(result.embedding / np.linalg.norm(result.embedding))
    cosine = np.stack(embeddings) @ embeddings[-1]
    assert cosine.min() >= 0.99, dict(zip((p.name for p in variants), cosine.round(4), strict=True))


def test_tag_activations() -> None:
    logits = np.array([[0.0, 2.0, -2.0]])
    np.testing.assert_allclose(tag_scores(logits, "sigmoid"), 1 / (1 + np.exp(-logits)))
    np.testing.assert_allclose(tag_scores(logits, "softmax").sum(), 1.0)
    np.testing.assert_allclose(tag_scores(logits, "none"), logits)


async def test_unavailable_providers_fall_back_to_the_cpu(tiny_bundle, tmp_path, caplog) -> None:
    settings = make_config(tmp_path, providers=["tensorrt", "cuda", "cpu"])
    caplog.set_level("WARNING")
    async with Engine([tiny_bundle.path], settings) as engine:
        assert engine.providers("tiny")[-1] == "CPUExecutionProvider"
        result = await engine.embed(_clip(0.3), "tiny")
    np.testing.assert_allclose(result.embedding, _expected_clip(tiny_bundle, _clip(0.3)), atol=1e-5)
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        assert "falls back" in caplog.text


async def test_several_bundles_are_served_side_by_side(tiny_bundle, slow_bundle, tmp_path) -> None:
    async with Engine([tiny_bundle.path, slow_bundle.path], make_config(tmp_path)) as engine:
        assert engine.models == ["tiny", "slow"] and engine.default_model == "tiny"
        tiny, slow = await asyncio.gather(engine.embed(_clip(0.3), "tiny"), engine.embed(_clip(0.3), "slow"))
        assert (tiny.model, tiny.num_windows, slow.model, slow.num_windows) == ("tiny", 5, "slow", 3)
    twice = Engine([tiny_bundle.path, tiny_bundle.path], make_config(tmp_path))
    with pytest.raises(bundle_format.BundleError, match="two bundles"):
        await twice.start()


async def test_batches_never_exceed_max_batch_windows(tiny_bundle, tmp_path) -> None:
    settings = make_config(tmp_path, max_batch_windows=4, max_wait_ms=20.0)
    async with Engine([tiny_bundle.path], settings) as engine:
        results = await asyncio.gather(*(engine.embed(_clip(0.3, seed=i), "tiny") for i in range(5)))  # 5 x 5
        windows = sum(result.num_windows for result in results)
        assert engine.windows_run("tiny") == windows == 25
        assert engine.batches_run("tiny") == 7  # ceil(25 / 4): every batch full but the last
