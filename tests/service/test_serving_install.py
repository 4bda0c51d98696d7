"""Serving needs no PyTorch: the service, app and server import neither torch nor transformers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_the_service_imports_no_torch_or_transformers() -> None:
    program = (
        "import sys\n"
        "import earshot.api.server, earshot.api.app, earshot.engine, earshot.engine.audio\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'transformers'})\n"
        "print(','.join(heavy))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "", f"the service imported {done.stdout.strip()}"


def test_export_without_the_export_part_says_what_to_install(tmp_path) -> None:
    import importlib.util

    import pytest

    if importlib.util.find_spec("earshot_export") is not None:
        pytest.skip("the export part is installed here; CI's serving-only environment runs this test")
    from earshot.cli import main

    assert main(["export", "hf:MIT/ast-finetuned-audioset-10-10-0.4593", "--out", str(tmp_path / "b")]) == 2
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["export", "beats:model.pt", "--out", str(tmp_path / "c")]) == 2
    assert "pip install -e ./models -e ./export" in err.getvalue()


def test_the_serving_install_holds_no_torch() -> None:
    from importlib.metadata import PackageNotFoundError, distribution

    import pytest

    try:
        distribution("earshot-export")
    except PackageNotFoundError:
        for heavy in ("torch", "transformers"):
            with pytest.raises(PackageNotFoundError):
                distribution(heavy)
    else:
        pytest.skip("a full install (export part present); CI's serving-only environment runs this test")
