"""`earshot embed` runs the bundle's self-test before it embeds anything."""

from __future__ import annotations

import shutil

import numpy as np

from earshot import bundle as bundle_format
from earshot.cli import main


def test_a_bundle_failing_its_self_test_embeds_nothing(yamnet_bundle, tmp_path, audio_dir, capsys):
    root = tmp_path / "tampered"
    shutil.copytree(yamnet_bundle.path, root)
    probe_path = root / yamnet_bundle.manifest.probe["file"]
    with np.load(probe_path) as arrays:
        values = {name: arrays[name] for name in arrays.files}
    values["embedding"] = values["embedding"][::-1].copy()  # expectations of the wrong windows
    np.savez_compressed(probe_path, **values)
    (root / bundle_format.MANIFEST_FILE).unlink()
    bundle_format.write(root, yamnet_bundle.manifest, yamnet_bundle.labels)
    out = tmp_path / "rows.parquet"
    status = main(["embed", str(audio_dir / "bird_crow.ogg"), "--bundle", str(root), "--out", str(out)])
    error = capsys.readouterr().err
    assert status == 3, error
    assert "not embedding" in error and "self-test FAILED" in error and "tolerance 0.98" in error
    assert not out.exists()


def test_a_good_bundle_passes_and_embeds(yamnet_bundle, tmp_path, audio_dir):
    out = tmp_path / "rows.parquet"
    assert main(["embed", str(audio_dir / "bird_crow.ogg"), "--bundle", str(yamnet_bundle.path), "--out", str(out)]) == 0
    assert out.is_file()
