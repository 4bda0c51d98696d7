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
