"""`GET /metrics`: what the gateway counts, read back through Prometheus' own parser."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from service.app import create_app
from service.settings import Settings


def samples(client: TestClient) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def value(found: dict, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def test_requests_faces_and_steps_are_counted(
    client: TestClient, photo: Callable[[str], bytes]
) -> None:
    before = samples(client)
    for _ in range(2):
        r = client.post(
            "/classify?model=compact", files={"image": ("a.jpg", photo("multi_face.jpg"))}
        )
        assert r.status_code == 200
    client.get(f"/jobs/{'0' * 32}")
    after = samples(client)
    labels = {"route": "/classify", "method": "POST", "status": "200", "model": "compact"}
    assert (
        value(after, "fer_requests_total", **labels) - value(before, "fer_requests_total", **labels)
        == 2
    )
    timed = {"route": "/classify", "method": "POST", "model": "compact"}
    assert value(after, "fer_request_duration_seconds_count", **timed) >= 2
    faces = len(r.json()["faces"])
    assert faces > 1
    assert (
        value(after, "fer_faces_per_image_sum", model="compact")
        - value(before, "fer_faces_per_image_sum", model="compact")
        == 2 * faces
    )
    for step in ("decode", "detect", "align", "classify"):
        assert value(after, "fer_step_duration_seconds_count", step=step) >= 2, step
    # a route template, never the raw path of a job
    missing = {"route": "/jobs/{job_id}", "method": "GET", "status": "404", "model": ""}
    assert value(after, "fer_requests_total", **missing) >= 1
    assert value(after, "fer_job_queue_depth") == 0


def test_jobs_are_timed_by_outcome(
    transfer_store: Callable[[float], Path], photo: Callable[[str], bytes]
) -> None:
    files = {
        "face": ("a.jpg", photo("astronaut.jpg")),
        "expression": ("b.jpg", photo("grace_hopper.jpg")),
    }
    no_face = {**files, "expression": ("c.jpg", photo("no_face.jpg"))}
    with TestClient(create_app(Settings(model_store=transfer_store(0.0)))) as c:
        assert c.post("/transfer", params={"wait": 20}, files=files).status_code == 200
        assert c.post("/transfer", params={"wait": 20}, files=no_face).json()["status"] == "failed"
        found = samples(c)
    assert value(found, "fer_job_duration_seconds_count", kind="transfer", outcome="succeeded") == 1
    assert value(found, "fer_job_duration_seconds_count", kind="transfer", outcome="failed") == 1


def test_backend_errors_are_counted(settings: Settings, photo: Callable[[str], bytes]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    down = settings.model_copy(
        update={"backend": "torchserve", "torchserve_url": url, "torchserve_management_url": url}
    )
    with TestClient(create_app(down)) as c:
        r = c.post("/classify", files={"image": ("a.jpg", photo("astronaut.jpg"))})
        assert r.status_code == 503
        found = samples(c)
    assert value(found, "fer_backend_errors_total", type="backend-unavailable") == 1
