"""The GPU check (loadtest/gpu/gpu_check.py), dry-run on the CPU: the same code at tiny shapes, so the
script a GPU session runs in one short call is known to work before a GPU is lent."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")


def test_the_dry_run_writes_its_report(tmp_path):
    from loadtest.gpu import gpu_check

    assert gpu_check.main(["--dry-run", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "gpu_check.json").read_text(encoding="utf-8"))
    assert report["dry_run"] and report["matmul_tflops"] > 0
    assert [row["family"] for row in report["families"]] == ["AST", "CLAP (HTS-AT audio)", "wav2vec 2.0"]
    for row in report["families"]:
        assert row["bf16_vs_fp32_cpu_min_cosine"] > 0.99  # bf16 autocast against fp32, same weights
        assert row["ours_gflop_per_clip"] > 0 and set(row["ours"]) == {"1", "2"}
        assert all(entry["clips_per_s"] > 0 and "ratio_to_peer" in entry for entry in row["ours"].values())
    table = (tmp_path / "gpu_check.md").read_text(encoding="utf-8")
    assert "DRY RUN" in table and table.count("\n| ") == 2 + 6  # header, rule, 3 families x 2 batches
