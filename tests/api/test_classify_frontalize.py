"""`POST /classify?frontalize=true` in the embedded mode: the turned faces are frontalized
by the test `frontalize.mar` (the real network at tiny widths, untrained: tests/conftest.py)
before the shipped classifiers read them. Every step runs for real; only the frontalizer's
weights are a stand-in, so these tests check the plumbing, not the gain in accuracy."""

from __future__ import annotations

import base64
import io
import logging
import math
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.app import create_app
from service.settings import DEFAULT_MODEL_STORE, Settings

CLASSES = {"angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"}
FRONTALIZER = {"name": "frontalize", "version": "0.0-test"}


@pytest.fixture(scope="module")
def store(frontalize_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test frontalizer beside the shipped compact and DeRL classifiers."""
    store = tmp_path_factory.mktemp("classify-frontalize") / "store"
    shutil.copytree(frontalize_store, store)
    shutil.copy(DEFAULT_MODEL_STORE / "derl.mar", store)
    return store


@pytest.fixture(scope="module")
def settings(store: Path) -> Settings:
    return Settings(backend="local", model_store=store)


def classify(client: TestClient, data: bytes, **params: object):
    return client.post("/classify", files={"image": ("photo.jpg", data)}, params=params)


def check_probabilities(face: dict) -> None:
    probs = face["probabilities"]
    assert set(probs) == CLASSES
    assert all(0 <= p <= 1 for p in probs.values())
    assert math.isclose(sum(probs.values()), 1.0, abs_tol=1e-6)
    assert face["expression"] == max(probs, key=probs.__getitem__)


@pytest.fixture(scope="module")
def plain(client: TestClient, photo: Callable[[str], bytes]) -> dict:
    """/classify of multi_face.jpg (5 faces, yaw -8 to +16) without frontalization."""
    r = classify(client, photo("multi_face.jpg"), model="compact")
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["faces"]) == 5
    assert body["frontalizer"] is None
    assert not any(f["frontalized"] for f in body["faces"])
    return dict(body)


def test_threshold_0_frontalizes_every_face(
    client: TestClient, photo: Callable[[str], bytes], plain: dict, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        r = classify(
            client, photo("multi_face.jpg"), model="compact", frontalize=True, frontalize_min_yaw=0
        )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["frontalizer"] == FRONTALIZER
    assert len(body["faces"]) == 5
    for face, before in zip(body["faces"], plain["faces"], strict=True):
        assert face["frontalized"] is True
        assert face["box"] == before["box"] and face["yaw"] == before["yaw"]
        check_probabilities(face)
    # the classifier read the generated faces, not the turned ones
    assert [f["probabilities"] for f in body["faces"]] != [
        f["probabilities"] for f in plain["faces"]
    ]
    assert "frontalize;dur=" in r.headers["server-timing"]
    assert "frontalized=5" in caplog.text
    assert max(len(rec.getMessage()) for rec in caplog.records) < 1000  # no image bytes


def test_threshold_90_frontalizes_none(
    client: TestClient, photo: Callable[[str], bytes], plain: dict
) -> None:
    r = classify(
        client, photo("multi_face.jpg"), model="compact", frontalize=True, frontalize_min_yaw=90
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["frontalizer"] == FRONTALIZER
    assert body["faces"] == plain["faces"]  # the very probabilities of a plain /classify


def test_only_faces_turned_past_the_threshold(
    client: TestClient, settings: Settings, photo: Callable[[str], bytes], plain: dict
) -> None:
    yaws = sorted(abs(f["yaw"]) for f in plain["faces"])
    assert yaws[0] < yaws[-1]
    data = photo("multi_face.jpg")
    cases = {"threshold": (yaws[0] + yaws[-1]) / 2, "default": settings.frontalize_min_yaw}
    for case, threshold in cases.items():
        params = {"frontalize_min_yaw": threshold} if case == "threshold" else {}
        r = classify(client, data, model="compact", frontalize=True, **params)
        assert r.status_code == 200, r.text
        for face, before in zip(r.json()["faces"], plain["faces"], strict=True):
            assert face["frontalized"] is (abs(face["yaw"]) >= threshold), (case, face["yaw"])
            check_probabilities(face)
            if not face["frontalized"]:  # batch mates change the float rounding at most
                for c, p in face["probabilities"].items():
                    assert math.isclose(p, before["probabilities"][c], abs_tol=1e-5)


def test_neutral_face_of_the_frontal_view(
    client: TestClient, photo: Callable[[str], bytes]
) -> None:
    r = classify(
        client,
        photo("astronaut.jpg"),
        model="derl",
        neutral=True,
        frontalize=True,
        frontalize_min_yaw=0,
    )
    assert r.status_code == 200, r.text
    (face,) = r.json()["faces"]
    assert face["frontalized"] is True
    check_probabilities(face)
    neutral = Image.open(io.BytesIO(base64.b64decode(face["neutral_face"])))
    assert neutral.size == (48, 48)


@pytest.mark.parametrize("value", ["-1", "90.5", "abc", "nan", "inf"])
def test_bad_threshold_is_422(
    client: TestClient, photo: Callable[[str], bytes], assert_problem, value: str
) -> None:
    r = classify(client, photo("astronaut.jpg"), frontalize=True, frontalize_min_yaw=value)
    body = assert_problem(r, 422, "invalid-request")
    assert "frontalize_min_yaw" in str(body["errors"])


def test_no_face_with_frontalize(client: TestClient, photo: Callable[[str], bytes]) -> None:
    r = classify(client, photo("no_face.jpg"), frontalize=True)
    assert r.status_code == 200, r.text
    assert r.json()["faces"] == [] and r.json()["frontalizer"] == FRONTALIZER


@pytest.fixture(scope="module")
def without_frontalizer(store: Path) -> Iterator[TestClient]:
    """The same store served without its frontalizer."""
    pillow_limit = Image.MAX_IMAGE_PIXELS
    settings = Settings(backend="local", model_store=store, models=["compact"])
    try:
        with TestClient(create_app(settings), raise_server_exceptions=False) as c:
            yield c
    finally:
        Image.MAX_IMAGE_PIXELS = pillow_limit


def test_without_a_frontalizer_is_503(
    without_frontalizer: TestClient, photo: Callable[[str], bytes], assert_problem
) -> None:
    r = classify(without_frontalizer, photo("astronaut.jpg"), frontalize=True)
    body = assert_problem(r, 503, "model-not-ready")
    assert "frontalize" in str(body["detail"]) and r.headers["retry-after"]
    r = classify(without_frontalizer, photo("astronaut.jpg"))
    assert r.status_code == 200 and r.json()["faces"][0]["frontalized"] is False
