"""`POST /frontalize` in the embedded mode: a queued job like `/transfer`, over a model
store whose `frontalize.mar` is the real frontalization network at tiny widths, untrained
(tests/conftest.py): every step runs for real, only the weights are a stand-in."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.settings import Settings


@pytest.fixture(scope="module")
def settings(frontalize_store: Path) -> Settings:
    return Settings(backend="local", model_store=frontalize_store, jobs="local")


def test_frontal_face_of_a_photo(client: TestClient, photo: Callable[[str], bytes]) -> None:
    files = {"face": ("astronaut.jpg", photo("astronaut.jpg"))}
    r = client.post("/frontalize", files=files, params={"wait": 20})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(r.content)).size == (48, 48)

    r = client.post("/frontalize", files=files, headers={"Accept": "application/json"})
    assert r.status_code == 202 and r.json()["kind"] == "frontalize"
    assert r.json()["params"] == {"face_index": 0}
    job = r.json()["id"]
    r = client.get(
        f"/jobs/{job}/result", params={"wait": 20}, headers={"Accept": "application/json"}
    )
    assert r.status_code == 200, r.text
    result = r.json()
    assert result["model"] == {"name": "frontalize", "version": "0.0-test"}
    assert set(result["inputs"]) == {"face"} and result["inputs"]["face"]["faces_found"] == 1


def test_bad_requests(client: TestClient, photo: Callable[[str], bytes], assert_problem) -> None:
    assert_problem(client.post("/frontalize"), 415, "unsupported-media-type")
    other = {"expression": ("astronaut.jpg", photo("astronaut.jpg"))}
    assert_problem(client.post("/frontalize", files=other), 400, "missing-image")
    files = {"face": ("astronaut.jpg", photo("astronaut.jpg"))}
    r = client.post("/frontalize", files=files, params={"face_index": -1})
    assert r.status_code == 422
    r = client.post("/frontalize", files={"face": ("x.png", b"not an image")})
    assert r.status_code in (400, 415) and r.headers["content-type"].startswith(
        "application/problem+json"
    )
    # a photo without a face: the job fails with no-face, not a 500
    r = client.post(
        "/frontalize", files={"face": ("no_face.jpg", photo("no_face.jpg"))}, params={"wait": 20}
    )
    body = r.json()
    status = client.get(f"/jobs/{body['id']}").json() if r.status_code == 202 else body
    assert "no-face" in str(status)
