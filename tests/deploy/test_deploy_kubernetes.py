"""deploy/kubernetes: every kustomization builds, every manifest validates against the Kubernetes
schemas, and the pieces agree with each other and with the image.

Rendering: kustomize_subset builds the tree as `kubectl apply -k` does (the tree keeps to that
subset; anything else fails the build). Validation: kubernetes-validate's offline OpenAPI schemas,
in strict mode (unknown fields fail), for the oldest and newest Kubernetes versions we claim.
The ServiceMonitor is a CRD of the Prometheus operator, which has no schema there: its required
fields and references are checked here instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.deploy import dockerfile_model
from tests.deploy.conftest import ADAPTER_VALUES, KUBERNETES_DIR, require

require("yaml")
require("jsonpatch")
from tests.deploy import kustomize_subset  # noqa: E402  (needs pyyaml and jsonpatch, checked above)

KUBERNETES_VERSIONS = ("1.29.0", "1.37.0")  # the oldest we support, and the newest kubernetes-validate knows
CRD_KINDS = {("monitoring.coreos.com", "ServiceMonitor")}
BASE = KUBERNETES_DIR / "base"
COMPONENTS = sorted(path for path in (KUBERNETES_DIR / "components").iterdir() if path.is_dir())
OVERLAYS = sorted(path for path in (KUBERNETES_DIR / "overlays").iterdir() if path.is_dir())
IMAGE_UID = 10001
CONTAINER = "earshot"


def builds() -> dict[str, list[dict[str, Any]]]:
    """Every way the tree is meant to be built: base, each overlay, base + each component."""
    rendered = {"base": kustomize_subset.build(BASE)}
    for overlay in OVERLAYS:
        rendered[f"overlays/{overlay.name}"] = kustomize_subset.build(overlay)
    for component in COMPONENTS:
        rendered[f"base+{component.name}"] = kustomize_subset.build_with(BASE, [component])
    return rendered


RENDERED = builds()


def by_kind(manifests: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [item for item in manifests if item["kind"] == kind]


def one(manifests: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = by_kind(manifests, kind)
    return found


def server_container(deployment: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == CONTAINER)


def container_env(manifests: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, str]:
    """The container's environment: ConfigMaps it loads, then its own `env` values."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        name = source["configMapRef"]["name"]
        env.update(next(c["data"] for c in by_kind(manifests, "ConfigMap") if c["metadata"]["name"] == name))
    env.update({item["name"]: item["value"] for item in container.get("env", []) if "value" in item})
    return env


def test_every_kustomization_is_built() -> None:
    on_disk = {path.parent for path in KUBERNETES_DIR.rglob("kustomization.yaml")}
    assert on_disk == {BASE, *COMPONENTS, *OVERLAYS}
    assert {"production", "gpu"} <= {overlay.name for overlay in OVERLAYS}


def test_the_subset_refuses_what_it_does_not_build(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [../x]\nnamePrefix: a-\n"
    )
    with pytest.raises(kustomize_subset.UnsupportedKustomization, match="namePrefix"):
        kustomize_subset.build(tmp_path)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("build", sorted(RENDERED))
def test_manifests_validate(build: str, version: str) -> None:
    kubernetes_validate = require("kubernetes_validate")
    checked = 0
    for manifest in RENDERED[build]:
        group = manifest["apiVersion"].rpartition("/")[0]
        if (group, manifest["kind"]) in CRD_KINDS:
            continue  # no schema offline: test_service_monitor checks it
        try:
            kubernetes_validate.validate(manifest, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(part) for part in error.path)
            pytest.fail(f"{build}: {manifest['kind']}/{manifest['metadata']['name']} at {path}: {error.message}")
        checked += 1
    assert checked >= 6


def test_the_validator_is_not_blind() -> None:
    kubernetes_validate = require("kubernetes_validate")
    deployment = one(kustomize_subset.build(BASE), "Deployment")
    server_container(deployment)["readinessProbe"]["httpGett"] = {"path": "/readyz"}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)


@pytest.mark.parametrize("build", sorted(RENDERED))
def test_probes_drain_and_security(build: str, dockerfile: dockerfile_model.Dockerfile) -> None:
    manifests = RENDERED[build]
    deployment = one(manifests, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = server_container(deployment)
    port = next(p for p in container["ports"] if p["name"] == "http")

    probes = {kind: container[kind]["httpGet"] for kind in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert {kind: probe["path"] for kind, probe in probes.items()} == {
        "startupProbe": "/readyz", "readinessProbe": "/readyz", "livenessProbe": "/healthz",
    }
    assert all(probe["port"] in ("http", port["containerPort"]) for probe in probes.values())

    env = container_env(manifests, container)
    assert int(env["EARSHOT_PORT"]) == port["containerPort"]
    assert env["EARSHOT_HOST"] == "0.0.0.0"
    # SIGKILL comes after terminationGracePeriodSeconds, counted from the start of preStop:
    # it must cover the preStop sleep and the whole drain
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] > float(pre_stop[1]) + float(env["EARSHOT_GRACE_TIMEOUT_S"])

    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"]) and {"cpu", "memory"} <= set(resources["limits"])
    # ONNX Runtime would otherwise size its thread pool by the node's cores
    assert int(env["EARSHOT_THREADS"]) == int(resources["limits"]["cpu"])

    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == IMAGE_UID
    assert pod["securityContext"]["runAsUser"] == int(dockerfile.effective("cpu", "USER").arguments.split(":")[0])
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    for item in [*pod.get("initContainers", []), container]:
        context = item["securityContext"]
        assert context["readOnlyRootFilesystem"] is True and context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
    # a read-only root: /tmp and the cache are writable volumes
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert "emptyDir" in volumes[mounts[env["EARSHOT_CACHE_DIR"]]]


@pytest.mark.parametrize("build", sorted(RENDERED))
def test_bundles_reach_the_server(build: str, dockerfile: dockerfile_model.Dockerfile) -> None:
    """The init container copies the image's bundle cache (the default bundle) into the cache volume
    the server reads, from the same image."""
    manifests = RENDERED[build]
    deployment = one(manifests, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = server_container(deployment)
    cache_dir = container_env(manifests, container)["EARSHOT_CACHE_DIR"]
    assert cache_dir == dockerfile.environment("cpu")["EARSHOT_CACHE_DIR"]
    (init,) = pod["initContainers"]
    assert init["image"] == container["image"]
    command = init["command"]
    assert command[:3] == ["cp", "-R", f"{cache_dir}/."]
    cache_volume = next(m["name"] for m in container["volumeMounts"] if m["mountPath"] == cache_dir)
    assert {"name": cache_volume, "mountPath": command[3].rstrip("/")} in init["volumeMounts"]


@pytest.mark.parametrize("build", sorted(RENDERED))
def test_selectors_and_references_agree(build: str) -> None:
    manifests = RENDERED[build]
    deployment = one(manifests, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    service = one(manifests, "Service")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    container = server_container(deployment)
    (service_port,) = service["spec"]["ports"]
    assert service_port["targetPort"] in [p["name"] for p in container["ports"]]
    pdb = one(manifests, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    hpa = one(manifests, "HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    # the budget never blocks a node drain at the minimum size
    assert hpa["spec"]["minReplicas"] >= 2 and pdb["spec"]["maxUnavailable"] >= 1
    assert container["resources"]["requests"]["cpu"], "CPU utilisation is measured against requests"
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == one(manifests, "ServiceAccount")["metadata"]["name"]
    for ingress in by_kind(manifests, "Ingress"):
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                assert backend["name"] == service["metadata"]["name"]
                assert backend["port"]["name"] == service_port["name"]
                assert path["path"].startswith("/v1"), "only the API goes out: not /metrics or the probes"


@pytest.mark.parametrize("build", [name for name in sorted(RENDERED) if "monitoring" in name or "overlays" in name])
def test_service_monitor(build: str) -> None:
    manifests = RENDERED[build]
    monitor = one(manifests, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(monitor) == {"apiVersion", "kind", "metadata", "spec"} and monitor["metadata"]["name"]
    service = one(manifests, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in [port["name"] for port in service["spec"]["ports"]]
    assert endpoint["path"] == "/metrics"
    assert seconds(endpoint["scrapeTimeout"]) < seconds(endpoint["interval"])
    assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "scheme", "honorLabels"}


@pytest.mark.parametrize("build", sorted(RENDERED))
def test_autoscaler_metrics(build: str) -> None:
    manifests = RENDERED[build]
    metrics = one(manifests, "HorizontalPodAutoscaler")["spec"]["metrics"]
    assert metrics[0] == {
        "type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}},
    }
    custom = [metric["pods"]["metric"]["name"] for metric in metrics if metric["type"] == "Pods"]
    with_monitoring = "monitoring" in build or build.startswith("overlays/")
    assert custom == (["earshot_queued_windows"] if with_monitoring else [])
    if custom:
        assert custom[0] in adapter_metric_names(), "the Prometheus adapter does not expose it"


def test_gpu_overlay() -> None:
    manifests = RENDERED["overlays/gpu"]
    deployment = one(manifests, "Deployment")
    container = server_container(deployment)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["resources"]["requests"]["nvidia.com/gpu"] == 1
    env = container_env(manifests, container)
    assert env["EARSHOT_PROVIDERS"] == "tensorrt,cuda,cpu"
    assert container["image"].endswith(":gpu")
    tolerations = deployment["spec"]["template"]["spec"]["tolerations"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in tolerations
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600, "room to build TensorRT engines"
    cpu_only = one(RENDERED["overlays/production"], "Deployment")
    assert "nvidia.com/gpu" not in server_container(cpu_only)["resources"]["limits"]
    assert server_container(cpu_only)["image"].endswith(":cpu")


def test_bundles_pvc_component() -> None:
    manifests = RENDERED["base+bundles-pvc"]
    claim = one(manifests, "PersistentVolumeClaim")
    pod = one(manifests, "Deployment")["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v.get("persistentVolumeClaim"))
    assert volume["persistentVolumeClaim"] == {"claimName": claim["metadata"]["name"], "readOnly": True}
    mount = next(m for m in server_container(one(manifests, "Deployment"))["volumeMounts"] if m["name"] == volume["name"])
    assert mount["readOnly"] is True


def adapter_metric_names() -> set[str]:
    yaml = require("yaml")
    values = yaml.safe_load(ADAPTER_VALUES.read_text(encoding="utf-8"))
    return {rule["name"]["as"] for rule in values["rules"]["custom"]}


def seconds(duration: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    return float(duration[:-1]) * units[duration[-1]]
