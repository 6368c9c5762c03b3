"""`POST /frontalize` in the embedded mode: a queued job like `/transfer`, over a model
store whose `frontalize.mar` is the real frontalization network at tiny widths, untrained
(tests/conftest.py): every step runs for real, only the weights are a stand-in."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.app import create_app
from service.settings import Settings


def started(settings: Settings) -> Iterator[TestClient]:
    pillow_limit = Image.MAX_IMAGE_PIXELS  # create_app sets it process-wide
    try:
        with TestClient(create_app(settings), raise_server_exceptions=False) as c:
            yield c
    finally:
        Image.MAX_IMAGE_PIXELS = pillow_limit


@pytest.fixture(scope="module")
def local(frontalize_store: Path) -> Iterator[TestClient]:
    yield from started(Settings(model_store=frontalize_store, jobs="local"))


def test_frontal_face_of_a_photo(local: TestClient, photo: Callable[[str], bytes]) -> None:
    files = {"face": ("astronaut.jpg", photo("astronaut.jpg"))}
    r = local.post("/frontalize", files=files, params={"wait": 20})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(r.content)).size == (48, 48)

    r = local.post("/frontalize", files=files, headers={"Accept": "application/json"})
    assert r.status_code == 202 and r.json()["kind"] == "frontalize"
    assert r.json()["params"] == {"face_index": 0}
    job = r.json()["id"]
    r = local.get(
        f"/jobs/{job}/result", params={"wait": 20}, headers={"Accept": "application/json"}
    )
    assert r.status_code == 200, r.text
    result = r.json()
    assert result["model"] == {"name": "frontalize", "version": "0.0-test"}
    assert set(result["inputs"]) == {"face"} and result["inputs"]["face"]["faces_found"] == 1


def test_bad_requests(local: TestClient, photo: Callable[[str], bytes], assert_problem) -> None:
    assert_problem(local.post("/frontalize"), 415, "unsupported-media-type")
    other = {"expression": ("astronaut.jpg", photo("astronaut.jpg"))}
    assert_problem(local.post("/frontalize", files=other), 400, "missing-image")
    files = {"face": ("astronaut.jpg", photo("astronaut.jpg"))}
    r = local.post("/frontalize", files=files, params={"face_index": -1})
    assert r.status_code == 422
    r = local.post("/frontalize", files={"face": ("x.png", b"not an image")})
    assert r.status_code in (400, 415) and r.headers["content-type"].startswith(
        "application/problem+json"
    )
    # a photo without a face: the job fails with no-face, not a 500
    r = local.post(
        "/frontalize", files={"face": ("no_face.jpg", photo("no_face.jpg"))}, params={"wait": 20}
    )
    body = r.json()
    status = local.get(f"/jobs/{body['id']}").json() if r.status_code == 202 else body
    assert "no-face" in str(status)


def test_without_the_model_it_is_503(photo: Callable[[str], bytes], assert_problem) -> None:
    for client in started(Settings(jobs="local")):  # the shipped store: no frontalize.mar
        files = {"face": ("astronaut.jpg", photo("astronaut.jpg"))}
        assert_problem(client.post("/frontalize", files=files), 503, "model-not-ready")
