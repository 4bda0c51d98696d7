"""Files that are not audio: skipped in folders with a word, always tried when named."""

from __future__ import annotations

import shutil

import pyarrow.parquet as pq

from earshot.catalog.inputs import expand_inputs
from earshot.cli import main


def test_a_folder_reports_what_it_skips_and_a_manifest_tries_anything(yamnet_bundle, tmp_path, audio_dir, capsys):
    folder = tmp_path / "sounds"
    folder.mkdir()
    shutil.copy(audio_dir / "bird_crow.ogg", folder / "crow.ogg")
    shutil.copy(audio_dir / "bad" / "not_audio.txt", folder / "notes.txt")
    (folder / ".hidden.wav").write_bytes(b"")  # hidden files are passed over
    skipped: list[str] = []
    assert expand_inputs([str(folder)], skipped) == [str(folder / "crow.ogg")]
    assert skipped == [str(folder / "notes.txt")]
    # named again, or named directly: reported once, or not at all (it is tried, then)
    skipped = []
    expand_inputs([str(folder), str(folder)], skipped)
    assert skipped == [str(folder / "notes.txt")]
    skipped = []
    named = folder / "notes.md"
    named.write_text("not audio either", encoding="utf-8")
    assert expand_inputs([str(folder), str(named)], skipped)[-1] == str(named) and str(named) not in skipped
    named.unlink()

    out = tmp_path / "rows.parquet"
    assert main(["embed", str(folder), "--bundle", str(yamnet_bundle.path), "--out", str(out)]) == 0
    error = capsys.readouterr().err
    assert "skipped 1 file(s) in folders whose extension is not audio (.txt): " + str(folder / "notes.txt") in error
    assert "1 skipped as not audio" in error
    assert pq.read_table(out).column("path").to_pylist() == [str(folder / "crow.ogg")]

    manifest = tmp_path / "list.csv"
    manifest.write_text(f"path\n{folder / 'notes.txt'}\n{folder / 'crow.ogg'}\n", encoding="utf-8")
    out = tmp_path / "named.parquet"
    assert main(["embed", str(manifest), "--bundle", str(yamnet_bundle.path), "--out", str(out)]) == 1  # one failed
    rows = {row["path"]: row for row in pq.read_table(out).to_pylist()}
    assert rows[str(folder / "notes.txt")]["error"] and rows[str(folder / "crow.ogg")]["error"] is None
