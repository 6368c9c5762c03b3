"""service.faces: the RetinaFace detector, the similarity aligner, NMS."""

from __future__ import annotations

import math
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from service.archive import InputSpec
from service.faces import (
    FRAMINGS,
    RELIABLE_FACE_PX,
    RetinaFaceDetector,
    align,
    crops_for,
    nms,
    reduction,
    similarity_transform,
)

DATA = Path(__file__).resolve().parents[1] / "data"
SPEC = InputSpec(size=48, channels=1, color="gray", mean=0.5, std=0.25, framing="fer2013")


def similarity(angle_deg: float, scale: float, tx: float, ty: float) -> np.ndarray:
    a = math.radians(angle_deg)
    rot = scale * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return np.hstack([rot, [[tx], [ty]]])


def apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:, :2].T + m[:, 2]


def test_similarity_transform_recovers_a_known_one() -> None:
    src = FRAMINGS["fer2013"] * 100
    m = similarity(23.0, 1.7, 40.0, -12.0)
    assert np.allclose(similarity_transform(src, apply(m, src)), m, atol=1e-9)


def test_similarity_transform_never_reflects() -> None:
    src = FRAMINGS["fer2013"] * 100
    mirrored = src * [-1, 1]
    m = similarity_transform(src, mirrored)
    assert np.linalg.det(m[:, :2]) > 0


@pytest.mark.parametrize(("angle", "scale"), [(0.0, 1.0), (-25.0, 6.0), (40.0, 0.6)])
def test_align_puts_the_landmarks_on_the_template(angle: float, scale: float) -> None:
    """Dots drawn at the 5 landmarks of a rotated, scaled face land where the framing
    template says, within a pixel of the 48 px crop."""
    size = 48
    template = FRAMINGS["fer2013"] * size
    # where the face sits in the photo: template -> photo
    m = similarity(angle, scale * 4, 300.0, 250.0)
    landmarks = apply(m, template - size / 2)
    photo = Image.new("L", (700, 600), 0)
    draw = ImageDraw.Draw(photo)
    radius = max(2.0, scale * 4 * 0.8)
    for x, y in landmarks:
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=255)
    crop = np.asarray(align(photo, landmarks, size, "fer2013"), np.float64)
    for tx, ty in template:
        x0, y0 = int(tx) - 4, int(ty) - 4
        window = crop[y0 : y0 + 9, x0 : x0 + 9]
        assert window.sum() > 0
        ys, xs = np.mgrid[y0 : y0 + 9, x0 : x0 + 9]
        cx, cy = (xs * window).sum() / window.sum(), (ys * window).sum() / window.sum()
        # pixel centres: Pillow's pixel (i, j) covers [i, i+1), its centre is i + 0.5
        assert abs(cx + 0.5 - tx) < 1.0 and abs(cy + 0.5 - ty) < 1.0


def test_nms_keeps_the_best_of_overlapping_boxes() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], dtype=float)
    scores = np.array([0.8, 0.9, 0.7])
    assert nms(boxes, scores, 0.4) == [1, 2]


@pytest.fixture(scope="module")
def detector() -> RetinaFaceDetector:
    return RetinaFaceDetector()


def test_detector_finds_the_astronaut(detector: RetinaFaceDetector) -> None:
    image = np.asarray(Image.open(DATA / "astronaut.jpg").convert("RGB"))
    faces = detector.detect(image)
    assert len(faces) == 1
    face = faces[0]
    x1, y1, x2, y2 = face.box
    assert 150 < x1 < x2 < 300 and 30 < y1 < y2 < 200 and face.score > 0.95
    eye_l, eye_r, nose, mouth_l, mouth_r = face.landmarks
    assert eye_l[0] < nose[0] < eye_r[0] and mouth_l[0] < mouth_r[0]
    assert max(eye_l[1], eye_r[1]) < nose[1] < min(mouth_l[1], mouth_r[1])


def test_detector_finds_five_faces(detector: RetinaFaceDetector) -> None:
    image = np.asarray(Image.open(DATA / "multi_face.jpg").convert("RGB"))
    assert len(detector.detect(image)) == 5


def test_detector_on_no_face_and_tiny_images(detector: RetinaFaceDetector) -> None:
    assert detector.detect(np.asarray(Image.open(DATA / "no_face.jpg").convert("RGB"))) == []
    assert detector.detect(np.zeros((1, 1, 3), np.uint8)) == []
    assert detector.detect(np.zeros((3, 2000, 3), np.uint8)) == []


def test_crops_for_a_gray_model(detector: RetinaFaceDetector) -> None:
    image = Image.open(DATA / "astronaut.jpg").convert("RGB")
    faces = detector.detect(np.asarray(image))
    (crop,) = crops_for(image, faces, SPEC)
    assert crop.shape == (48, 48) and crop.dtype == np.uint8 and crop.std() > 20
    rgb = SPEC.model_copy(update={"color": "rgb", "channels": 3})
    assert crops_for(image, faces, rgb)[0].shape == (48, 48, 3)


@pytest.mark.parametrize(
    ("size", "min_face", "max_side", "factor"),
    [
        ((512, 512), 48, 1920, 2),  # a portrait: halved
        ((512, 512), 24, 1920, 1),  # small faces asked for: full size
        ((1920, 1080), 40, 1920, 1),  # a 1080p frame with 40 px faces: full size
        ((1920, 1080), 100, 1920, 4),
        ((4000, 3000), 48, 1920, 3),  # the cost bound wins over min_face
        ((30, 20), 48, 1920, 2),
    ],
)
def test_reduction_keeps_the_smallest_face_detectable(
    size: tuple[int, int], min_face: int, max_side: int, factor: int
) -> None:
    assert reduction(*size, min_face, max_side) == factor
    # the smallest face asked for stays at least RELIABLE_FACE_PX in the detector's input,
    # unless the cost bound had to shrink further
    if math.ceil(max(size) / max_side) <= min_face // RELIABLE_FACE_PX:
        assert min_face / factor >= RELIABLE_FACE_PX


def small_face_frame(width: int) -> tuple[Image.Image, tuple[float, float, float, float]]:
    """A gray 1920x1080 frame with the astronaut's face pasted `width` px wide; its box."""
    photo = Image.open(DATA / "astronaut.jpg").convert("RGB")
    (face,) = RetinaFaceDetector(min_face=8).detect(photo)
    x1, y1, x2, y2 = face.box
    scale = width / (x2 - x1)
    small = photo.resize((round(photo.width * scale), round(photo.height * scale)))
    frame = Image.new("RGB", (1920, 1080), (128, 128, 128))
    frame.paste(small, (900, 500))
    return frame, (900 + x1 * scale, 500 + y1 * scale, 900 + x2 * scale, 500 + y2 * scale)


def test_min_face_finds_small_faces_in_a_1080p_frame(detector: RetinaFaceDetector) -> None:
    frame, (x1, y1, x2, y2) = small_face_frame(30)
    assert reduction(*frame.size, detector.min_face, detector.max_side) == 2  # default: halved
    (face,) = detector.detect(frame, min_face=30)  # full size
    bx1, by1, bx2, by2 = face.box
    assert abs(bx1 - x1) < 6 and abs(by1 - y1) < 6 and abs(bx2 - x2) < 6 and abs(by2 - y2) < 6


def test_a_reduced_detection_maps_back_to_the_image(detector: RetinaFaceDetector) -> None:
    photo = Image.open(DATA / "astronaut.jpg").convert("RGB")
    (full,) = detector.detect(photo, min_face=24)  # full size
    (half,) = detector.detect(photo)  # halved
    assert np.abs(np.subtract(full.box, half.box)).max() < 8
    assert (
        np.abs(full.landmarks - half.landmarks).max() < 8
    )  # 5% of the face: the network's own spread


class _Held:
    """A detector session that blocks in `run` until released (the real session answers)."""

    def __init__(self, session: Any) -> None:
        self.session, self.calls = session, 0
        self.entered, self.release = threading.Event(), threading.Event()

    def run(self, *args: Any) -> Any:
        self.calls += 1
        self.entered.set()
        assert self.release.wait(10)
        return self.session.run(*args)


class _Counted:
    def __init__(self, session: Any) -> None:
        self.session, self.calls = session, 0

    def run(self, *args: Any) -> Any:
        self.calls += 1
        return self.session.run(*args)


def test_a_detection_alone_uses_every_thread_and_a_concurrent_one_a_single_thread() -> None:
    detector = RetinaFaceDetector(threads=2)
    assert detector.alone is not detector.session  # 2 intra-op threads / 1
    photo = Image.open(DATA / "astronaut.jpg").convert("RGB")
    alone, single = _Held(detector.alone), _Counted(detector.session)
    detector.alone, detector.session = alone, single  # type: ignore[assignment]
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(detector.detect, photo)  # runs alone: the 2-thread session
        assert alone.entered.wait(10)
        second = detector.detect(photo)  # starts while the first runs: one thread
        alone.release.set()
        assert len(first.result(timeout=10)) == len(second) == 1
    assert (alone.calls, single.calls) == (1, 1)
    detector.detect(photo)  # alone again
    assert (alone.calls, single.calls) == (2, 1)

    # Other work held in flight (a request between upload and answer) counts too; the
    # request's own detection, nested in its hold, does not count twice.
    with detector.occupancy.hold():
        detector.detect(photo)  # the request's own detection: still alone
        assert (alone.calls, single.calls) == (3, 1)
        with ThreadPoolExecutor(1) as pool:  # another request's (a fresh context)
            pool.submit(detector.detect, photo).result(timeout=10)
        assert (alone.calls, single.calls) == (3, 2)
    assert detector.occupancy.alone
    one = RetinaFaceDetector(threads=1)
    assert one.alone is one.session  # nothing to choose from


def _reference_align(image: Image.Image, landmarks: np.ndarray, size: int) -> np.ndarray:
    """The crop the slow way: the whole image warped at 8x the crop's resolution, then
    reduced with the antialiasing resize."""
    m = similarity_transform(landmarks, FRAMINGS["fer2013"] * size * 8)
    inv = np.linalg.inv(np.vstack([m, [0.0, 0.0, 1.0]]))[:2].ravel()
    big = image.transform(
        (size * 8, size * 8), Image.Transform.AFFINE, data=tuple(inv), resample=Image.BILINEAR
    )
    return np.asarray(big.resize((size, size), Image.Resampling.BILINEAR), np.float64)


@pytest.mark.parametrize(("zoom", "shift"), [(1.0, 0.0), (3.0, 0.0), (6.0, 0.0), (3.0, -0.45)])
def test_align_of_a_large_face_matches_the_slow_reference(
    detector: RetinaFaceDetector, zoom: float, shift: float
) -> None:
    """A face 1x-6x the size of the astronaut's (its region shrunk before the warp), and
    one half out of the photo (the outside is black, as a whole-image warp makes it)."""
    photo = Image.open(DATA / "astronaut.jpg").convert("L")
    photo = photo.resize((round(512 * zoom), round(512 * zoom)), Image.Resampling.BICUBIC)
    (face,) = detector.detect(photo.convert("RGB"))
    landmarks = face.landmarks + [shift * photo.width, 0.0]  # moved left, partly outside
    photo = photo.transform(
        photo.size, Image.Transform.AFFINE, data=(1, 0, -shift * photo.width, 0, 1, 0)
    )
    crop = np.asarray(align(photo, landmarks, 48), np.float64)
    reference = _reference_align(photo, landmarks, 48)
    assert np.abs(crop - reference).mean() < 2.0
    if shift:
        assert crop[:, :8].max() == 0  # the left of the crop lies outside the photo
