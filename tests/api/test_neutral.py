"""`/classify?neutral=true`: the de-expressed face of every face, from DeRL archives only.

The app serves a tiny DeRL archive (real network and handler, untrained weights: this
checks the path, not the quality) next to the repository's classifier.
"""

from __future__ import annotations

import base64
import io
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.app import create_app
from service.settings import DEFAULT_MODEL_STORE, Settings


@pytest.fixture(scope="module")
def neutral_client(
    derl_store: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    store = tmp_path_factory.mktemp("neutral") / "store"
    store.mkdir()
    shutil.copy(derl_store / "derl.mar", store / "derl.mar")
    shutil.copy(DEFAULT_MODEL_STORE / "compact.mar", store / "compact.mar")
    pillow_limit = Image.MAX_IMAGE_PIXELS
    try:
        with TestClient(create_app(Settings(model_store=store, backend="local"))) as c:
            yield c
    finally:
        Image.MAX_IMAGE_PIXELS = pillow_limit


def test_neutral_faces(neutral_client: TestClient, photo: Callable[[str], bytes]) -> None:
    r = neutral_client.post(
        "/classify?model=derl&neutral=true", files={"image": ("m.jpg", photo("multi_face.jpg"))}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"]["name"] == "derl" and len(body["faces"]) == 5
    for face in body["faces"]:
        neutral = Image.open(io.BytesIO(base64.b64decode(face["neutral_face"])))
        assert neutral.format == "PNG" and neutral.size == (48, 48) and neutral.mode == "L"
        assert sum(face["probabilities"].values()) == pytest.approx(1, abs=1e-6)


def test_no_neutral_unless_asked(neutral_client: TestClient, photo) -> None:
    r = neutral_client.post(
        "/classify?model=derl", files={"image": ("a.jpg", photo("astronaut.jpg"))}
    )
    assert r.status_code == 200
    assert [f["neutral_face"] for f in r.json()["faces"]] == [None]


def test_neutral_needs_a_derl_model(neutral_client: TestClient, photo) -> None:
    r = neutral_client.post(
        "/classify?model=compact&neutral=true", files={"image": ("a.jpg", photo("astronaut.jpg"))}
    )
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "DeRL" in r.json()["detail"]
