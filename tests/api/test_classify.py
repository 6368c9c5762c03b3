"""POST /classify on real photos, through the real app and the local backend."""

from __future__ import annotations

import math
from collections.abc import Callable

from fastapi.testclient import TestClient

from service.catalog import default_classifier, scan
from service.faces import LANDMARKS
from service.settings import Settings

CLASSES = {"angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"}


def classify(client: TestClient, data: bytes, name: str = "photo.jpg", **params: object):
    return client.post("/classify", files={"image": (name, data)}, params=params)


def check_face(face: dict, width: int, height: int) -> None:
    box = face["box"]
    assert box["x"] >= 0 and box["y"] >= 0
    assert box["x"] + box["width"] <= width + 0.5 and box["y"] + box["height"] <= height + 0.5
    assert set(face["landmarks"]) == set(LANDMARKS)
    for point in face["landmarks"].values():  # landmarks lie in (or right at) the box
        assert box["x"] - 5 <= point["x"] <= box["x"] + box["width"] + 5
        assert box["y"] - 5 <= point["y"] <= box["y"] + box["height"] + 5
    assert 0.5 < face["score"] <= 1
    probs = face["probabilities"]
    assert set(probs) == CLASSES
    assert math.isclose(sum(probs.values()), 1.0, abs_tol=1e-6)
    assert face["expression"] == max(probs, key=probs.__getitem__)


def test_multi_face_gives_five_faces_largest_first(
    client: TestClient, settings: Settings, photo: Callable[[str], bytes]
) -> None:
    r = classify(client, photo("multi_face.jpg"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["image"] == {"width": 800, "height": 534, "format": "JPEG"}
    default = default_classifier(scan(settings.model_store))  # derl once shipped, else compact
    assert default in ("derl", "compact")
    assert body["model"]["name"] == default and body["model"]["version"]
    faces = body["faces"]
    assert len(faces) == 5
    for face in faces:
        check_face(face, 800, 534)
    areas = [f["box"]["width"] * f["box"]["height"] for f in faces]
    assert areas == sorted(areas, reverse=True)
    assert "detect;dur=" in r.headers["server-timing"]


def test_astronaut_is_happy(client: TestClient, photo: Callable[[str], bytes]) -> None:
    r = classify(client, photo("astronaut.jpg"))
    assert r.status_code == 200, r.text
    faces = r.json()["faces"]
    assert len(faces) == 1
    check_face(faces[0], 512, 512)
    assert faces[0]["expression"] == "happy"


def test_grace_hopper_has_one_face(client: TestClient, photo: Callable[[str], bytes]) -> None:
    r = classify(client, photo("grace_hopper.jpg"))
    assert r.status_code == 200, r.text
    faces = r.json()["faces"]
    assert len(faces) == 1
    check_face(faces[0], 437, 512)


def test_no_face_is_an_empty_list(client: TestClient, photo: Callable[[str], bytes]) -> None:
    r = classify(client, photo("no_face.jpg"))
    assert r.status_code == 200, r.text
    assert r.json()["faces"] == []


def test_raw_image_body_equals_multipart(client: TestClient, photo: Callable[[str], bytes]) -> None:
    data = photo("grace_hopper.jpg")
    raw = client.post("/classify", content=data, headers={"Content-Type": "image/jpeg"})
    assert raw.status_code == 200, raw.text
    assert raw.json() == classify(client, data).json()


def test_max_faces_keeps_the_largest(client: TestClient, photo: Callable[[str], bytes]) -> None:
    data = photo("multi_face.jpg")
    every = classify(client, data).json()["faces"]
    two = classify(client, data, max_faces=2).json()["faces"]
    assert len(two) == 2
    for kept, face in zip(two, every[:2], strict=True):
        assert kept["box"] == face["box"] and kept["expression"] == face["expression"]
        for c, p in kept["probabilities"].items():  # batch size changes the float rounding
            assert math.isclose(p, face["probabilities"][c], abs_tol=1e-5)


def test_model_by_name(client: TestClient, photo: Callable[[str], bytes]) -> None:
    r = classify(client, photo("astronaut.jpg"), model="compact")
    assert r.status_code == 200 and r.json()["model"]["name"] == "compact"


def test_exif_orientation_is_applied(client: TestClient, photo: Callable[[str], bytes]) -> None:
    """A photo stored sideways with an EXIF 'rotate' tag is classified upright."""
    import io

    from PIL import Image

    upright = Image.open(io.BytesIO(photo("astronaut.jpg")))
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what a rotated camera writes
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    buf = io.BytesIO()
    stored.save(buf, format="JPEG", quality=90, exif=exif.tobytes())
    body = classify(client, buf.getvalue()).json()
    assert body["image"]["width"] == 512 and len(body["faces"]) == 1
    assert body["faces"][0]["expression"] == "happy"


def test_min_face_sets_how_small_a_face_is_found(
    client: TestClient, photo: Callable[[str], bytes]
) -> None:
    """A smaller `min_face` detects at full size: the same face, found as well; a value
    under the floor is a 422 problem."""
    default = classify(client, photo("astronaut.jpg")).json()["faces"]
    full = classify(client, photo("astronaut.jpg"), min_face=24)
    assert full.status_code == 200, full.text
    (face,) = full.json()["faces"]
    assert abs(face["box"]["x"] - default[0]["box"]["x"]) < 8
    bad = classify(client, photo("astronaut.jpg"), min_face=4)
    assert bad.status_code == 422
    assert bad.headers["content-type"].startswith("application/problem+json")
