"""The `earshot` command: settings from flags and environment, `models`, usage errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from earshot import bundle
from earshot.cli import build_parser, main, settings_from_args


def test_every_setting_is_a_flag_and_flags_win_over_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("EARSHOT_MAX_QUEUED_WINDOWS", "77")
    monkeypatch.setenv("EARSHOT_MAX_WAIT_MS", "9")
    monkeypatch.setenv("EARSHOT_BUNDLES", "from-env")
    args = build_parser().parse_args(
        ["serve", "--bundle", "a", "--bundle", "b,c", "--max-wait-ms", "2", "--providers", "cuda,cpu",
         "--cache-dir", str(tmp_path)]
    )
    settings = settings_from_args(args)
    assert settings.bundles == ["a", "b", "c"]  # the flag replaces EARSHOT_BUNDLES
    assert settings.max_wait_ms == 2.0  # the flag wins
    assert settings.max_queued_windows == 77  # the environment fills what no flag says
    assert settings.providers == ["cuda", "cpu"] and settings.cache_dir == tmp_path


def test_invalid_setting_is_a_usage_error(capsys):
    assert main(["serve", "--max-batch-windows", "0"]) == 2
    assert "max_batch_windows" in capsys.readouterr().err


def test_models_lists_cached_bundles(yamnet_bundle, tmp_path, capsys):
    cache = tmp_path / "cache"
    target = bundle.cache_bundles_dir(cache) / "yamnet"
    target.parent.mkdir(parents=True)
    target.symlink_to(yamnet_bundle.path, target_is_directory=True)
    assert main(["models", "--cache-dir", str(cache)]) == 0
    row = json.loads(capsys.readouterr().out.strip())
    assert row["name"] == "yamnet" and row["num_labels"] == 521 and row["window_seconds"] == 0.96
    assert main(["models", "--cache-dir", str(cache), str(tmp_path)]) == 1  # not a bundle: an error row
    assert "not a bundle" in capsys.readouterr().out


def test_console_script_help_lists_the_commands():
    finished = subprocess.run([sys.executable, "-m", "earshot.cli", "--help"], capture_output=True, text=True)
    assert finished.returncode == 0
    for command in ("serve", "export", "embed", "models"):
        assert command in finished.stdout


def test_serve_never_imports_torch():
    """A serving install has no PyTorch: building the app and the default bundle must not need it."""
    code = (
        "import sys, earshot.cli, earshot.api.app, earshot.api.server, earshot.default_model, "
        "earshot.catalog.job; assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("argv", [["embed", "x", "--out", "o.parquet"], ["export", "hf:x"]])
def test_missing_required_options_exit_2(argv):
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
