"""The bundle self-test at load: a model whose outputs on its probe are wrong never becomes ready."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest

from earshot import bundle as bundle_format
from earshot.api.app import create_app
from earshot.api.lifecycle import State
from earshot.engine.self_test import SelfTestFailed, open_runner, read_probe
from tests.service.conftest import make_settings
from tests.service.small_bundles import LABELS, _tiny_graph, write_tiny_bundle

pytestmark = pytest.mark.anyio


@contextlib.asynccontextmanager
async def started(settings, bundles) -> AsyncIterator[httpx.AsyncClient]:
    """The real app with its lifespan, once it is ready or has settled as not ready."""
    app = create_app(settings, bundles)
    async with app.router.lifespan_context(app):
        lifecycle = app.state.lifecycle
        while lifecycle.state is State.STARTING:
            await asyncio.sleep(0.005)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://earshot", timeout=60) as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


def rewrite(source: bundle_format.Bundle, root: Path, **changes) -> bundle_format.Bundle:
    """A copy of a bundle with manifest fields changed (checksums recomputed, as a tamperer would)."""
    shutil.copytree(source.path, root)
    (root / bundle_format.MANIFEST_FILE).unlink()
    return bundle_format.write(root, dataclasses.replace(source.manifest, **changes), source.labels)


def tamper_probe_expectation(source: bundle_format.Bundle, root: Path) -> bundle_format.Bundle:
    shutil.copytree(source.path, root)
    probe_path = root / source.manifest.probe["file"]
    with np.load(probe_path) as arrays:
        values = {name: arrays[name] for name in arrays.files}
    values["embedding"][1] = -values["embedding"][1]  # the second window's expected embedding flipped
    np.savez_compressed(probe_path, **values)
    (root / bundle_format.MANIFEST_FILE).unlink()
    return bundle_format.write(root, source.manifest, source.labels)


async def assert_never_ready(client: httpx.AsyncClient, model: str) -> dict:
    lifecycle = client.app.state.lifecycle  # type: ignore[attr-defined]
    assert lifecycle.state is State.SELF_TEST_FAILED and not lifecycle.ready
    ready = await client.get("/readyz")
    assert ready.status_code == 503
    error = ready.json()["error"]
    assert error["code"] == "self_test_failed"
    message = error["message"]
    for part in (f"model {model}", "CPUExecutionProvider", "min embedding cosine", "tolerance"):
        assert part in message, (part, message)
    assert (await client.get("/healthz")).status_code == 200  # alive: restarting cannot mend it
    refused = await client.post("/v1/embed", content=b"\0" * 64, headers={"content-type": "audio/wav"})
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "self_test_failed"
    await asyncio.sleep(0.05)
    assert lifecycle.state is State.SELF_TEST_FAILED  # and it stays so
    return error


async def test_models_show_a_passed_self_test(tmp_path, tiny_bundle):
    async with started(make_settings(tmp_path), [tiny_bundle.path]) as client:
        assert (await client.get("/readyz")).status_code == 200
        card = (await client.get("/v1/models")).json()["data"][0]
    test = card["self_test"]
    assert test["status"] == "passed" and test["provider"] == "CPUExecutionProvider"
    assert test["tolerance"] == tiny_bundle.manifest.probe["tolerance"]["min_cosine"] == 0.9999
    assert test["min_embedding_cosine"] >= 0.9999 and test["min_logits_cosine"] >= 0.9999


async def test_a_tampered_probe_expectation_never_reports_ready(tmp_path, tiny_bundle, caplog):
    tampered = tamper_probe_expectation(tiny_bundle, tmp_path / "tampered")
    with caplog.at_level(logging.ERROR):
        async with started(make_settings(tmp_path), [tampered.path]) as client:
            error = await assert_never_ready(client, "tiny")
    assert "FAILED" in error["message"]
    logged = [r.getMessage() for r in caplog.records if "self-test FAILED" in r.getMessage()]
    assert logged and "model tiny on CPUExecutionProvider" in logged[0] and "tolerance 0.9999" in logged[0]


async def test_a_graph_that_computes_something_else_never_reports_ready(tmp_path, tiny_bundle):
    root = tmp_path / "other"
    shutil.copytree(tiny_bundle.path, root)
    other = _tiny_graph()
    for tensor in other.graph.initializer:  # the same graph with other weights
        if tensor.name == "w_embed":
            values = onnx.numpy_helper.to_array(tensor)[::-1].copy()
            tensor.CopyFrom(onnx.numpy_helper.from_array(values, "w_embed"))
    onnx.save(other, str(root / bundle_format.MODEL_FILE))
    (root / bundle_format.MANIFEST_FILE).unlink()
    swapped = bundle_format.write(root, tiny_bundle.manifest, LABELS)
    async with started(make_settings(tmp_path), [swapped.path]) as client:
        await assert_never_ready(client, "tiny")


async def test_one_failing_bundle_among_good_ones_keeps_the_server_unready(tmp_path, tiny_bundle):
    good = rewrite(tiny_bundle, tmp_path / "good", name="good")
    bad = tamper_probe_expectation(tiny_bundle, tmp_path / "bad")
    async with started(make_settings(tmp_path), [good.path, bad.path]) as client:
        error = await assert_never_ready(client, "tiny")
        assert "model good" not in error["message"]  # only the failing one is named


async def test_an_old_bundle_without_a_probe_loads_with_a_warning(tmp_path, caplog):
    old = write_tiny_bundle(tmp_path / "old", probe=False)
    assert not old.manifest.probe and bundle_format.PROBE_FILE not in old.manifest.files
    with caplog.at_level(logging.WARNING):
        async with started(make_settings(tmp_path), [old.path]) as client:
            assert (await client.get("/readyz")).status_code == 200
            test = (await client.get("/v1/models")).json()["data"][0]["self_test"]
    assert test["status"] == "no_probe" and test["min_embedding_cosine"] is None
    assert any("no self-test probe" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


# -- the fallback, on the default model: its fast integer path and its float Q/DQ reference differ by
# a few uint8 rounding steps (probe cosine 0.991-0.999, on every CPU: the integers are exact), so a
# tolerance of 0.9995 fails the fast path and passes the reference, on any machine
def strict(yamnet_bundle, root: Path) -> bundle_format.Bundle:
    probe = {**yamnet_bundle.manifest.probe, "tolerance": {"min_cosine": 0.9995}}
    return rewrite(yamnet_bundle, root, probe=probe)


def test_fallback_serves_the_reference_arithmetic_and_says_so(tmp_path, yamnet_bundle):
    config = make_settings(tmp_path, max_batch_windows=4).engine_config().runner_config()
    bundle = strict(yamnet_bundle, tmp_path / "strict")
    with pytest.raises(SelfTestFailed) as refused:
        open_runner(bundle, config, "refuse")
    assert refused.value.result.status == "failed" and refused.value.result.min_embedding_cosine < 0.9995
    runner, result = open_runner(bundle, config, "fallback")
    assert result.status == "fallback" and result.passed
    assert runner.arithmetic.startswith("int8 reference") and result.arithmetic == runner.arithmetic
    assert "serving with the fallback instead" in result.message and result.min_embedding_cosine > 0.99999
    probe = read_probe(bundle)
    np.testing.assert_allclose(runner.run(probe.waveform, probe.num_samples).embedding, probe.embedding, atol=1e-5)


async def test_fallback_through_the_server(tmp_path, yamnet_bundle):
    bundle = strict(yamnet_bundle, tmp_path / "strict")
    settings = make_settings(tmp_path, self_test_on_failure="fallback", max_batch_windows=4)
    async with started(settings, [bundle.path]) as client:
        assert (await client.get("/readyz")).status_code == 200
        test = (await client.get("/v1/models")).json()["data"][0]["self_test"]
    assert test["status"] == "fallback" and "fallback" in test["message"]
