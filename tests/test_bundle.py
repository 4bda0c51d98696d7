"""The bundle format: write, read back, checksums, names, malformed manifests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from earshot import bundle


def make_manifest(**changes) -> bundle.Manifest:
    fields = dict(
        name="tiny",
        family="test",
        sample_rate=16000,
        window_samples=1600,
        hop_samples=800,
        embedding_dim=8,
        num_labels=2,
        precision="fp32",
        padding=bundle.Padding("zeros", "zero-padded waveform"),
        inputs=[bundle.TensorSpec("waveform", "float32", ["batch", 1600])],
        outputs=[
            bundle.TensorSpec("embedding", "float32", ["batch", 8]),
            bundle.TensorSpec("logits", "float32", ["batch", 2]),
        ],
    )
    fields.update(changes)
    return bundle.Manifest(**fields)


def write_bundle(root: Path, labels=("Speech", "Music, \"live\""), **changes) -> bundle.Bundle:
    root.mkdir(parents=True, exist_ok=True)
    (root / bundle.MODEL_FILE).write_bytes(b"not really onnx, the format module does not parse it")
    return bundle.write(root, make_manifest(**changes), list(labels))


def test_write_then_load_round_trips(tmp_path):
    written = write_bundle(tmp_path / "b")
    loaded = bundle.load(tmp_path / "b")
    assert loaded.manifest == written.manifest
    assert loaded.labels == ["Speech", 'Music, "live"']  # a comma and quotes survive the CSV
    assert set(loaded.manifest.files) == {"model.onnx", "labels.csv"}
    assert loaded.manifest.window_seconds == pytest.approx(0.1)
    assert loaded.manifest.has_logits and not loaded.manifest.takes_num_samples


def test_context_round_trips_and_sets_the_input_length(tmp_path):
    context = bundle.Context(before=200, after=40, edge="reflect")
    written = write_bundle(
        tmp_path / "b", context=context, inputs=[bundle.TensorSpec("waveform", "float32", ["batch", 1840])]
    )
    data = json.loads((tmp_path / "b" / bundle.MANIFEST_FILE).read_text())
    assert data["context"] == {"before": 200, "after": 40, "edge": "reflect"}
    loaded = bundle.load(tmp_path / "b")
    assert loaded.manifest == written.manifest and loaded.manifest.context == context
    assert (loaded.manifest.window_samples, loaded.manifest.input_samples) == (1600, 1840)
    assert loaded.manifest.window_seconds == pytest.approx(0.1)  # the window's own span


def test_a_manifest_without_context_loads_with_none(tmp_path):
    write_bundle(tmp_path / "b")
    manifest_path = tmp_path / "b" / bundle.MANIFEST_FILE
    data = json.loads(manifest_path.read_text())
    del data["context"]  # as written before the field existed
    manifest_path.write_text(json.dumps(data))
    loaded = bundle.load(tmp_path / "b")
    assert loaded.manifest.context == bundle.Context(0, 0, "zeros")
    assert loaded.manifest.input_samples == loaded.manifest.window_samples == 1600


def test_checksum_mismatch_is_refused(tmp_path):
    write_bundle(tmp_path / "b")
    (tmp_path / "b" / bundle.MODEL_FILE).write_bytes(b"tampered")
    with pytest.raises(bundle.BundleError, match="checksum mismatch for model.onnx"):
        bundle.load(tmp_path / "b")
    assert bundle.load(tmp_path / "b", verify=False).name == "tiny"


def test_missing_file_and_missing_manifest(tmp_path):
    write_bundle(tmp_path / "b")
    (tmp_path / "b" / "labels.csv").unlink()
    with pytest.raises(bundle.BundleError, match="labels.csv is missing"):
        bundle.load(tmp_path / "b")
    with pytest.raises(bundle.BundleError, match="not a bundle"):
        bundle.load(tmp_path)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"name": "../escape"}, "name"),
        ({"precision": "fp8"}, "precision"),
        ({"padding": bundle.Padding("frames", "needs num_samples")}, "num_samples"),
        ({"outputs": [bundle.TensorSpec("logits", "float32", ["batch", 2])]}, "embedding"),
        ({"context": bundle.Context(before=-1)}, "context before -1"),
        ({"context": bundle.Context(edge="wrap")}, "context edge 'wrap'"),
        ({"context": bundle.Context(before=200, after=40)}, "takes 1600 samples; context 200"),
    ],
)
def test_invalid_manifests_are_refused(tmp_path, changes, message):
    with pytest.raises(bundle.BundleError, match=message):
        write_bundle(tmp_path / "b", **changes)


def test_foreign_format_and_garbage_manifest(tmp_path):
    written = write_bundle(tmp_path / "b")
    manifest_path = tmp_path / "b" / bundle.MANIFEST_FILE
    data = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps({**data, "format": "other/2"}))
    with pytest.raises(bundle.BundleError, match="unsupported bundle format"):
        bundle.load(written.path)
    manifest_path.write_text("{not json")
    with pytest.raises(bundle.BundleError, match="unreadable manifest"):
        bundle.load(written.path)


def test_label_count_must_match(tmp_path):
    with pytest.raises(bundle.BundleError, match="1 labels given"):
        write_bundle(tmp_path / "b", labels=["only one"])


def test_resolve_by_directory_name_and_alias(tmp_path):
    cache = tmp_path / "cache"
    write_bundle(bundle.cache_bundles_dir(cache) / bundle.DEFAULT_MODEL, name=bundle.DEFAULT_MODEL)
    direct = write_bundle(tmp_path / "elsewhere")
    assert bundle.resolve(str(direct.path), cache) == direct.path
    assert bundle.resolve("default", cache) == bundle.cache_bundles_dir(cache) / bundle.DEFAULT_MODEL
    assert bundle.resolve(bundle.DEFAULT_MODEL, cache).name == bundle.DEFAULT_MODEL
    assert [p.name for p in bundle.list_cached(cache)] == [bundle.DEFAULT_MODEL]
    with pytest.raises(bundle.BundleError, match="no bundle 'missing'"):
        bundle.resolve("missing", cache)
