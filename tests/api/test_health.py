"""Liveness and readiness, and how the app behaves when its models cannot answer."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings


def test_healthz(client: TestClient) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_readyz_names_each_capability(client: TestClient) -> None:
    """The repository's store has classifiers but no tdgan archive: ready to classify (200),
    with transfer (and frontalize) named as degraded rather than a plain "ready"."""
    r = client.get("/readyz")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["checks"]["model:compact"]["ok"] is True
    capabilities = body["capabilities"]
    assert set(capabilities) == {"classify", "transfer", "frontalize", "video", "jobs"}
    assert capabilities["classify"]["ok"] is True and capabilities["jobs"]["ok"] is True
    assert capabilities["transfer"] == {
        "ok": False,
        "detail": "the model store has no 'tdgan' archive",
    }
    assert body["status"] == "degraded"
    assert body["degraded"] == ["frontalize", "transfer"]


def test_empty_model_store(
    settings: Settings, tmp_path: Path, photo: Callable[[str], bytes], assert_problem
) -> None:
    empty = settings.model_copy(update={"model_store": tmp_path})
    with TestClient(create_app(empty)) as c:
        assert c.get("/healthz").status_code == 200
        r = c.get("/readyz")
        assert r.status_code == 503 and r.json()["status"] == "not-ready"
        assert str(tmp_path) not in r.text  # no path of the server in any answer
        assert c.get("/models").json() == {"default": None, "models": []}
        r = c.post("/classify", files={"image": ("a.jpg", photo("astronaut.jpg"))})
        assert str(tmp_path) not in assert_problem(r, 503, "model-not-ready")["detail"]
        assert int(r.headers["retry-after"]) > 0


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_torchserve_down(settings: Settings, photo: Callable[[str], bytes], assert_problem) -> None:
    """The TorchServe backend with no TorchServe: 503 with Retry-After, never a 500."""
    url = f"http://127.0.0.1:{closed_port()}"
    down = settings.model_copy(
        update={"backend": "torchserve", "torchserve_url": url, "torchserve_management_url": url}
    )
    with TestClient(create_app(down)) as c:
        r = c.get("/readyz")
        assert r.status_code == 503
        assert "cannot reach" in r.json()["checks"]["model:compact"]["detail"]
        assert url.split("//")[1] not in r.text  # TorchServe's address stays inside
        assert c.get("/models").json()["models"][0]["ready"] is False
        r = c.post("/classify", files={"image": ("a.jpg", photo("astronaut.jpg"))})
        body = assert_problem(r, 503, "backend-unavailable")
        assert url.split("//")[1] not in str(body)
        assert int(r.headers["retry-after"]) > 0
        r = c.post("/classify", files={"image": ("a.jpg", photo("no_face.jpg"))})
        assert r.status_code == 200 and r.json()["faces"] == []  # no face: nothing to ask
