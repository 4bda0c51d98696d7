"""Print the serving install's third-party requirements, one per line, for the image's dependency layer.

The Dockerfile installs these before it copies the code, so the layer is rebuilt only when
pyproject.toml changes; `pip install --no-deps .` then adds earshot itself. The list is read from
pyproject.toml, the same one `pip install .` resolves, so the image and CI install the same things.

    python deploy/docker/requirements.py pyproject.toml                 # CPU image
    python deploy/docker/requirements.py pyproject.toml --gpu FILE      # onnxruntime swapped for FILE's lines
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

CPU_RUNTIME = "onnxruntime"  # the distribution the GPU image replaces (both ship the `onnxruntime` module)


def requirement_name(requirement: str) -> str:
    """The normalised distribution name at the start of a PEP 508 requirement."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if not match:
        raise ValueError(f"not a requirement: {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def serving_requirements(pyproject: Path, gpu_requirements: Path | None = None) -> list[str]:
    with open(pyproject, "rb") as handle:
        dependencies = list(tomllib.load(handle)["project"]["dependencies"])
    if gpu_requirements is None:
        return dependencies
    gpu_lines = [
        line.strip()
        for line in gpu_requirements.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith(("#", "-"))
    ]
    return [dep for dep in dependencies if requirement_name(dep) != CPU_RUNTIME] + gpu_lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pyproject", type=Path)
    parser.add_argument("--gpu", type=Path, metavar="FILE", help="requirements that replace onnxruntime")
    args = parser.parse_args(argv)
    print("\n".join(serving_requirements(args.pyproject, args.gpu)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
