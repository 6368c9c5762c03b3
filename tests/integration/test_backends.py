"""TorchServeBackend and LocalBackend give the same answers, through the whole gateway.

Both serve the same `.mar` (the session's `model_store`); the gateway detects and aligns
the faces of real photos once per app and each backend classifies the crops.
"""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.app import create_app
from service.catalog import scan
from service.faces import RetinaFaceDetector, crops_for
from service.inference import LocalBackend, TorchServeBackend
from service.launcher.process import TorchServe
from service.problems import ModelNotReady
from service.schemas import Generation, Prediction
from service.settings import Settings

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parents[1] / "data"
PHOTOS = ["astronaut.jpg", "grace_hopper.jpg", "multi_face.jpg", "no_face.jpg"]
TOLERANCE = 1e-5


def real_crops(spec_store: Path) -> list[np.ndarray]:
    """The aligned face crops of the test photos (7 faces)."""
    entry = scan(spec_store)["compact"]
    detector = RetinaFaceDetector()
    crops: list[np.ndarray] = []
    for name in PHOTOS:
        image = Image.open(DATA / name).convert("RGB")
        crops += crops_for(image, detector.detect(np.asarray(image)), entry.input)
    return crops


def test_backends_agree_on_face_crops(torchserve: TorchServe, model_store: Path) -> None:
    entry = scan(model_store)["compact"]
    crops = real_crops(model_store)
    assert len(crops) == 7

    async def both() -> tuple[list, list]:
        local = LocalBackend()
        remote = TorchServeBackend(torchserve.inference_url, torchserve.management_url)
        await local.start([entry])
        await remote.start([entry])
        try:
            assert (await remote.status(entry)).ready
            return await local.predict(entry, crops), await remote.predict(entry, crops)
        finally:
            await local.close()
            await remote.close()

    mine, theirs = asyncio.run(both())
    for a, b in zip(mine, theirs, strict=True):
        assert a.label == b.label
        for c in entry.classes:
            assert abs(a.probabilities[c] - b.probabilities[c]) <= TOLERANCE


def test_unknown_version_is_not_ready(torchserve: TorchServe, model_store: Path) -> None:
    entry = scan(model_store)["compact"]
    other = type(entry)(entry.name, "9.9-absent", entry.path, entry.metadata)

    async def ask() -> None:
        remote = TorchServeBackend(torchserve.inference_url, torchserve.management_url)
        await remote.start([other])
        try:
            assert not (await remote.status(other)).ready
            with pytest.raises(ModelNotReady) as info:
                await remote.predict(other, [np.zeros((48, 48), np.uint8)])
            assert info.value.retry_after
        finally:
            await remote.close()

    asyncio.run(ask())


@pytest.fixture(scope="module")
def clients(torchserve: TorchServe, model_store: Path) -> Iterator[tuple[TestClient, TestClient]]:
    """The gateway twice over the same store: embedded, and in front of TorchServe."""
    common = {"model_store": model_store, "models": ["compact"]}
    local = create_app(Settings(backend="local", **common))  # type: ignore[arg-type]
    remote = create_app(
        Settings(  # type: ignore[arg-type]
            backend="torchserve",
            torchserve_url=torchserve.inference_url,
            torchserve_management_url=torchserve.management_url,
            **common,
        )
    )
    with TestClient(local) as a, TestClient(remote) as b:
        yield a, b


@pytest.mark.parametrize("photo", PHOTOS)
def test_gateway_answers_the_same_in_both_modes(
    clients: tuple[TestClient, TestClient], photo: str
) -> None:
    data = (DATA / photo).read_bytes()
    local, remote = (c.post("/classify", files={"image": (photo, data)}) for c in clients)
    assert local.status_code == remote.status_code == 200, (local.text, remote.text)
    a, b = local.json(), remote.json()
    assert a["image"] == b["image"] and a["model"] == b["model"]
    assert len(a["faces"]) == len(b["faces"])
    for fa, fb in zip(a["faces"], b["faces"], strict=True):
        assert fa["box"] == fb["box"] and fa["landmarks"] == fb["landmarks"]
        assert fa["expression"] == fb["expression"]
        for c, p in fa["probabilities"].items():
            assert abs(p - fb["probabilities"][c]) <= TOLERANCE


def test_torchserve_mode_is_ready(clients: tuple[TestClient, TestClient]) -> None:
    _, remote = clients
    r = remote.get("/readyz")
    assert r.status_code == 200, r.text
    assert remote.get("/models").json()["models"][0]["ready"] is True


def test_neutral_faces_agree(torchserve: TorchServe, model_store: Path) -> None:
    """`neutral=true` through TorchServe and in-process: the same probabilities and the same
    generated neutral faces (a tiny test DeRL archive; the path, not the quality)."""
    entry = scan(model_store)["derl"]
    crops = real_crops(model_store)

    async def both() -> tuple[list, list]:
        local = LocalBackend()
        remote = TorchServeBackend(torchserve.inference_url, torchserve.management_url)
        await local.start([entry])
        await remote.start([entry])
        try:
            return (
                await local.predict(entry, crops, neutral=True),
                await remote.predict(entry, crops, neutral=True),
            )
        finally:
            await local.close()
            await remote.close()

    mine, theirs = asyncio.run(both())
    for a, b in zip(mine, theirs, strict=True):
        for c in entry.classes:
            assert abs(a.probabilities[c] - b.probabilities[c]) <= TOLERANCE
        assert a.neutral and b.neutral
        face_a = np.asarray(Image.open(io.BytesIO(base64.b64decode(a.neutral))))
        face_b = np.asarray(Image.open(io.BytesIO(base64.b64decode(b.neutral))))
        assert face_a.shape == (48, 48)
        assert np.abs(face_a.astype(int) - face_b.astype(int)).max() <= 1


def test_generated_faces_agree(torchserve: TorchServe, model_store: Path) -> None:
    """The generator handler (a tiny test `tdgan` exported by this checkout, with the shared
    handler base inside) gives the same image through TorchServe and in-process."""
    entry = scan(model_store)["tdgan"]
    photo = Image.open(DATA / "astronaut.jpg").convert("RGB")
    crops = crops_for(photo, RetinaFaceDetector().detect(np.asarray(photo)), entry.input)
    inputs = {"face": crops[0], "expression": crops[0][::-1].copy()}

    async def both() -> tuple[Generation, Generation]:
        local = LocalBackend()
        remote = TorchServeBackend(torchserve.inference_url, torchserve.management_url)
        await local.start([entry])
        await remote.start([entry])
        try:
            return await local.generate(entry, inputs), await remote.generate(entry, inputs)
        finally:
            await local.close()
            await remote.close()

    mine, theirs = asyncio.run(both())
    image_a = np.asarray(Image.open(io.BytesIO(mine.image)), dtype=int)
    image_b = np.asarray(Image.open(io.BytesIO(theirs.image)), dtype=int)
    assert image_a.shape == (64, 64, 3)
    assert np.abs(image_a - image_b).max() <= 1


def test_frontalize_then_classify_in_both_modes(torchserve: TorchServe, model_store: Path) -> None:
    """`/classify?frontalize=true` through TorchServe (the tiny test frontalizer, then
    compact) marks and classifies the faces as the embedded gateway does."""
    data = (DATA / "multi_face.jpg").read_bytes()
    common = {"model_store": model_store, "models": ["compact", "frontalize"]}
    local = create_app(Settings(backend="local", **common))  # type: ignore[arg-type]
    remote = create_app(
        Settings(  # type: ignore[arg-type]
            backend="torchserve",
            torchserve_url=torchserve.inference_url,
            torchserve_management_url=torchserve.management_url,
            **common,
        )
    )
    params = {"frontalize": "true", "frontalize_min_yaw": 5}
    with TestClient(local) as a, TestClient(remote) as b:
        mine, theirs = (
            c.post("/classify", files={"image": ("multi_face.jpg", data)}, params=params)
            for c in (a, b)
        )
        plain = b.post("/classify", files={"image": ("multi_face.jpg", data)}).json()
    assert mine.status_code == theirs.status_code == 200, (mine.text, theirs.text)
    assert "frontalize;dur=" in theirs.headers["server-timing"]
    x, y = mine.json(), theirs.json()
    assert x["frontalizer"] == y["frontalizer"] == {"name": "frontalize", "version": "0.0-test"}
    marks = [f["frontalized"] for f in y["faces"]]
    assert (
        marks == [abs(f["yaw"]) >= 5 for f in y["faces"]] == [f["frontalized"] for f in x["faces"]]
    )
    assert any(marks) and not all(marks)  # multi_face.jpg: yaws of -8 to +16
    for fa, fb, fp in zip(x["faces"], y["faces"], plain["faces"], strict=True):
        # the generated PNGs may differ by 1 grey level between the two processes
        for c, p in fa["probabilities"].items():
            assert abs(p - fb["probabilities"][c]) <= 0.01
        if not fb["frontalized"]:
            assert fb["probabilities"] == pytest.approx(fp["probabilities"], abs=TOLERANCE)


def test_sequences_agree(torchserve: TorchServe, model_store: Path) -> None:
    """The sequence handler (an untrained test `sequence.mar`: the network and its compact
    backbone's source inside) answers the same through a stock TorchServe and in-process."""
    entry = scan(model_store)["sequence"]
    photo = Image.open(DATA / "astronaut.jpg").convert("RGB")
    crops = crops_for(photo, RetinaFaceDetector().detect(np.asarray(photo)), entry.input)
    sequence = [crops[0], crops[0][:, ::-1].copy(), crops[0]]

    async def both() -> tuple[Prediction, Prediction]:
        local = LocalBackend()
        remote = TorchServeBackend(torchserve.inference_url, torchserve.management_url)
        await local.start([entry])
        await remote.start([entry])
        try:
            mine = await local.classify_sequence(entry, sequence)
            return mine, await remote.classify_sequence(entry, sequence)
        finally:
            await local.close()
            await remote.close()

    mine, theirs = asyncio.run(both())
    assert mine.label == theirs.label
    for c in entry.classes:
        assert abs(mine.probabilities[c] - theirs.probabilities[c]) <= TOLERANCE
