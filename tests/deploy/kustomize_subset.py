"""Build a kustomization the way `kubectl apply -k` does, for the subset of kustomize that
deploy/kubernetes uses, so CI can render the tree without a kustomize binary.

Supported, with kustomize's meaning:
- `resources`: YAML files (one or more documents) and directories holding a kustomization;
- `components`: directories holding a `kind: Component`, applied in order: their resources are
  added, then their patches and images transform everything gathered so far;
- `patches` with an RFC 6902 JSON patch (inline `patch` or `path`) and a `target` selecting by
  group, version, kind and name (a name is an anchored regular expression, as in kustomize);
  applied with the `jsonpatch` package, the same RFC kustomize implements;
- `images`: `name` matched against container and init-container images without their tag or
  digest, replaced by `newName`, `newTag` and/or `digest`.
Anything else (a strategic-merge patch, generators, namespace, labels, remote resources, ...) is
refused with UnsupportedKustomization, never skipped: the tree must stay inside what this builds.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import jsonpatch
import yaml

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
KUSTOMIZATION_KEYS = {"apiVersion", "kind", "resources", "components", "patches", "images"}
KINDS = {"Kustomization": "kustomize.config.k8s.io/v1beta1", "Component": "kustomize.config.k8s.io/v1alpha1"}
TARGET_KEYS = {"group", "version", "kind", "name"}
IMAGE_KEYS = {"name", "newName", "newTag", "digest"}
WORKLOAD_POD_SPEC = {  # where each workload kind keeps its pod spec
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "Pod": ("spec",),
}


class UnsupportedKustomization(ValueError):
    """The kustomization uses something outside the supported subset, or is malformed."""


def build(directory: Path) -> list[dict[str, Any]]:
    """The manifests `kustomize build DIRECTORY` prints, as dicts."""
    resources = _build(Path(directory), expected_kind="Kustomization")
    _check_unique(resources)
    return resources


def build_with(base: Path, components: list[Path]) -> list[dict[str, Any]]:
    """An overlay made on the fly: resources [base], components [...] (to render each component)."""
    resources = build(base)
    for component in components:
        _apply_component(Path(component), resources)
    _check_unique(resources)
    return resources


def kustomization_file(directory: Path) -> Path:
    for name in KUSTOMIZATION_FILES:
        if (directory / name).is_file():
            return directory / name
    raise UnsupportedKustomization(f"{directory}: no kustomization file")


def _load_kustomization(directory: Path, expected_kind: str) -> dict[str, Any]:
    path = kustomization_file(directory)
    spec = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    unknown = set(spec) - KUSTOMIZATION_KEYS
    if unknown:
        raise UnsupportedKustomization(f"{path}: fields outside the supported subset: {sorted(unknown)}")
    if spec.get("kind", "Kustomization") != expected_kind:
        raise UnsupportedKustomization(f"{path}: kind {spec.get('kind')!r}, expected {expected_kind}")
    if spec.get("apiVersion") != KINDS[expected_kind]:
        raise UnsupportedKustomization(f"{path}: apiVersion {spec.get('apiVersion')!r}, expected {KINDS[expected_kind]}")
    return spec


def _build(directory: Path, expected_kind: str) -> list[dict[str, Any]]:
    spec = _load_kustomization(directory, expected_kind)
    resources = _load_resources(directory, spec)
    for component in spec.get("components", []):
        _apply_component(directory / component, resources)
    _transform(directory, spec, resources)
    return resources


def _apply_component(directory: Path, resources: list[dict[str, Any]]) -> None:
    spec = _load_kustomization(directory, expected_kind="Component")
    if spec.get("components"):
        raise UnsupportedKustomization(f"{directory}: nested components")
    resources.extend(_load_resources(directory, spec))
    _transform(directory, spec, resources)


def _load_resources(directory: Path, spec: dict[str, Any]) -> list[dict[str, Any]]:
    loaded: list[dict[str, Any]] = []
    for entry in spec.get("resources", []):
        if "://" in entry or entry.startswith(("github.com/", "git@")):
            raise UnsupportedKustomization(f"{directory}: remote resource {entry!r}")
        path = (directory / entry).resolve()
        if path.is_dir():
            loaded.extend(_build(path, expected_kind="Kustomization"))
        elif path.is_file():
            documents = [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]
            for document in documents:
                if not isinstance(document, dict) or not {"apiVersion", "kind", "metadata"} <= set(document):
                    raise UnsupportedKustomization(f"{path}: a document that is not a Kubernetes object")
            loaded.extend(documents)
        else:
            raise UnsupportedKustomization(f"{directory}: resource {entry!r} does not exist")
    return loaded


def _transform(directory: Path, spec: dict[str, Any], resources: list[dict[str, Any]]) -> None:
    for patch in spec.get("patches", []):
        _apply_patch(directory, patch, resources)
    for image in spec.get("images", []):
        _apply_image(directory, image, resources)


def _apply_patch(directory: Path, entry: dict[str, Any], resources: list[dict[str, Any]]) -> None:
    unknown = set(entry) - {"patch", "path", "target"}
    if unknown or ("patch" in entry) == ("path" in entry):
        raise UnsupportedKustomization(f"{directory}: a patch needs exactly one of patch/path, and a target: {entry}")
    text = entry["patch"] if "patch" in entry else (directory / entry["path"]).read_text(encoding="utf-8")
    operations = yaml.safe_load(text)
    if not isinstance(operations, list):
        raise UnsupportedKustomization(f"{directory}: only RFC 6902 (JSON) patches are supported: {text[:80]!r}")
    target = entry.get("target")
    if not target or set(target) - TARGET_KEYS:
        raise UnsupportedKustomization(f"{directory}: a JSON patch needs a target of {sorted(TARGET_KEYS)}: {target}")
    patch = jsonpatch.JsonPatch(operations)
    matched = [index for index, resource in enumerate(resources) if _matches(target, resource)]
    if not matched:
        raise UnsupportedKustomization(f"{directory}: patch target {target} matches no resource")
    for index in matched:
        resources[index] = patch.apply(copy.deepcopy(resources[index]))


def _matches(target: dict[str, str], resource: dict[str, Any]) -> bool:
    group, _, version = resource["apiVersion"].rpartition("/")
    checks = (
        ("kind", resource["kind"]),
        ("name", resource["metadata"].get("name", "")),
        ("group", group),
        ("version", version),
    )
    return all(re.fullmatch(target[key], value) is not None for key, value in checks if key in target)


def _apply_image(directory: Path, image: dict[str, str], resources: list[dict[str, Any]]) -> None:
    if "name" not in image or set(image) - IMAGE_KEYS:
        raise UnsupportedKustomization(f"{directory}: images entries take {sorted(IMAGE_KEYS)}: {image}")
    for resource in resources:
        pod_spec = _pod_spec(resource)
        if pod_spec is None:
            continue
        for container in [*pod_spec.get("initContainers", []), *pod_spec.get("containers", [])]:
            name, tag, digest = split_image(container["image"])
            if name != image["name"]:
                continue
            name = image.get("newName", name)
            tag = image.get("newTag", tag)
            digest = image.get("digest", digest)
            container["image"] = name + (f"@{digest}" if digest else f":{tag}" if tag else "")


def _pod_spec(resource: dict[str, Any]) -> dict[str, Any] | None:
    path = WORKLOAD_POD_SPEC.get(resource["kind"])
    if path is None:
        return None
    node: Any = resource
    for key in path:
        node = node.get(key, {})
    return node


def split_image(reference: str) -> tuple[str, str | None, str | None]:
    """(name, tag, digest) of an image reference; a port in the registry is not a tag."""
    name, _, digest = reference.partition("@")
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = name.rsplit(":", 1)
        return name, tag, digest or None
    return name, None, digest or None


def _check_unique(resources: list[dict[str, Any]]) -> None:
    seen: set[tuple[str, str, str]] = set()
    for resource in resources:
        key = (resource["apiVersion"].rpartition("/")[0], resource["kind"], resource["metadata"]["name"])
        if key in seen:
            raise UnsupportedKustomization(f"two resources with the id {key}")
        seen.add(key)
