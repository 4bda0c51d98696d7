"""The export families' registry: every option a family does not read is refused, by the CLI too."""

from __future__ import annotations

import pytest

from earshot.cli import main
from earshot_export.sources import FAMILIES, ExportOptions, SourceError, check_options


def test_every_family_refuses_the_options_it_does_not_read():
    for family in FAMILIES.values():
        check_options(family, ExportOptions(name="ok"))  # the name is everyone's
        for option in ("fstride", "prompt", "input_tdim"):
            if option not in family.options:
                with pytest.raises(SourceError, match=f"{family.name}: --{option.replace('_', '-')} not taken"):
                    check_options(family, ExportOptions(**{option: 10 if option != "prompt" else "a {}"}))


def test_the_cli_says_which_options_a_family_takes(golden_dir, tmp_path, capsys):
    source = f"beats:{golden_dir / 'beats' / 'beats-tiny-a-pretrained.pt'}"
    assert main(["export", source, "--out", str(tmp_path / "b"), "--fstride", "10"]) == 2
    error = capsys.readouterr().err
    assert "beats: --fstride not taken here (it takes --labels, --window-seconds)" in error
    assert not (tmp_path / "b").exists()
