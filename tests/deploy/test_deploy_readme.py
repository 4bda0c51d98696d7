"""deploy/README.md (the README's Deploy section): what it names exists."""

from __future__ import annotations

import re

from tests.deploy import dockerfile_model
from tests.deploy.conftest import DEPLOY_DIR, REPO_ROOT

README = DEPLOY_DIR / "README.md"


def test_paths_it_names_exist() -> None:
    text = README.read_text(encoding="utf-8")
    paths = set(re.findall(r"\b(deploy/[\w./-]*\w)", text))
    assert len(paths) >= 5
    for path in sorted(paths):
        assert (REPO_ROOT / path).exists(), f"deploy/README.md names {path}, which does not exist"
    for name in re.findall(r"`(components|overlays)/([\w-]+)", text):
        assert (DEPLOY_DIR / "kubernetes" / "/".join(name)).is_dir(), name


def test_build_targets_it_names_exist(dockerfile: dockerfile_model.Dockerfile) -> None:
    targets = set(re.findall(r"--target (\w[\w-]*)", README.read_text(encoding="utf-8")))
    assert targets and targets <= set(dockerfile.by_name)


def test_no_bash_fence() -> None:
    """.ci/run runs the README's second ```bash block: this section must not add one before it."""
    assert "```bash" not in README.read_text(encoding="utf-8")
