"""service.frontalization: which faces are turned, which frontalizer may feed which
classifier, and how generated faces become the classifier's crops (a fake backend)."""

from __future__ import annotations

import asyncio
import base64
import io
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from service.archive import ArchiveMetadata
from service.catalog import ModelEntry, ModelStore
from service.faces import Detection, crops_for
from service.frontalization import (
    classifier_crop,
    frontalize_turned,
    frontalizer_for,
    log_framings,
    turned,
)
from service.imaging import DecodedImage
from service.pipeline import Analysis
from service.problems import BackendError, ProblemError
from service.schemas import Generation

GRAY_48 = {"size": 48, "channels": 1, "color": "gray", "mean": 0.5, "std": 0.5}
RGB_64 = {"size": 64, "channels": 3, "color": "rgb", "mean": 0.5, "std": 0.5}


def entry(name: str, kind: str, framing: str = "fer2013", **spec: Any) -> ModelEntry:
    metadata = ArchiveMetadata.model_validate(
        {
            "kind": kind,
            "classes": [] if kind == "frontalizer" else ["happy", "sad"],
            "input": {**(spec or GRAY_48), "framing": framing},
            "net": {"module": name, "file": f"{name}.py"},
        }
    )
    return ModelEntry(name, "1.0", Path(f"{name}.mar"), metadata)


def store(*entries: ModelEntry) -> ModelStore:
    return ModelStore({e.name: e for e in entries}, "compact", Path("."))


def test_turned_faces_are_those_at_or_past_the_threshold() -> None:
    yaws = [-30.0, -20.0, 0.0, 5.5, 20.0, 75.0]
    assert turned(yaws, 20) == [0, 1, 4, 5]
    assert turned(yaws, 0) == list(range(6))
    assert turned(yaws, 90) == []


def test_frontalizer_must_exist_and_share_the_framing(caplog: pytest.LogCaptureFixture) -> None:
    compact = entry("compact", "classifier")
    with pytest.raises(ProblemError) as info:
        frontalizer_for(store(compact), compact)
    assert info.value.kind.slug == "model-not-ready" and info.value.retry_after
    with pytest.raises(ProblemError) as info:
        frontalizer_for(store(compact, entry("frontalize", "transfer")), compact)
    assert info.value.kind.slug == "model-not-ready"

    good = entry("frontalize", "frontalizer")
    assert frontalizer_for(store(compact, good), compact) is good
    loose = entry("frontalize", "frontalizer", framing="loose")
    with pytest.raises(ProblemError) as info:
        frontalizer_for(store(compact, loose), compact)
    assert info.value.kind.slug == "invalid-request"
    assert "'fer2013'" in info.value.detail and "'loose'" in info.value.detail

    with caplog.at_level(logging.WARNING):
        log_framings(store(compact, good))
        assert not caplog.records
        log_framings(store(compact, loose, entry("tdgan", "transfer", framing="other")))
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        "classify?frontalize=true refuses model compact"
    ]


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def test_generated_face_to_the_classifier_crop() -> None:
    gray = np.tile(np.arange(64, dtype=np.uint8) * 4, (64, 1))
    spec = entry("c", "classifier").input
    crop = classifier_crop(png(gray), spec)
    assert crop.shape == (48, 48) and crop.dtype == np.uint8
    assert crop[:, 0].max() < 20 and crop[:, -1].min() > 230  # resized, not cropped
    rgb = classifier_crop(png(gray[:48, :48]), entry("c", "classifier", **RGB_64).input)
    assert rgb.shape == (64, 64, 3)
    same = classifier_crop(png(gray[:48, :48]), spec)
    assert np.array_equal(same, gray[:48, :48])  # same size and colour: unchanged
    with pytest.raises(BackendError, match="not a PNG"):
        classifier_crop(b"GIF89a...", spec)
    with pytest.raises(BackendError, match="not a square"):
        classifier_crop(png(gray[:40]), spec)


class FakeFrontalizer:
    """Generates a white face of the frontalizer's size, and counts overlapping calls."""

    def __init__(self, fail: bool = False) -> None:
        self.inputs: list[np.ndarray] = []
        self.running = self.most = 0
        self.fail = fail

    async def generate(self, model: ModelEntry, inputs: Mapping[str, np.ndarray]) -> Generation:
        self.inputs.append(inputs["face"])
        self.running += 1
        self.most = max(self.most, self.running)
        await asyncio.sleep(0.01)
        self.running -= 1
        if self.fail:
            raise BackendError("the frontalizer failed")
        size = model.input.size
        face = png(np.full((size, size, 3), 255, np.uint8))
        return Generation.model_validate({"image": base64.b64encode(face).decode()})


def analysis(classifier: ModelEntry, faces: int) -> Analysis:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 200, (120, 120 * faces, 3), dtype=np.uint8))
    points = np.array([[30.0, 40], [70, 40], [50, 60], [35, 80], [65, 80]])
    detected = [
        Detection((10.0 + 120 * i, 10, 110 + 120 * i, 110), points + [120 * i, 0], 0.99)
        for i in range(faces)
    ]
    crops = crops_for(image, detected, classifier.input)
    decoded = DecodedImage(image, "PNG", image.width, image.height)
    return Analysis(decoded, detected, crops, {}, classifier.input, detected)


def test_turned_faces_are_generated_concurrently_and_replaced() -> None:
    classifier = entry("compact", "classifier")
    frontalizer = entry("frontalize", "frontalizer", **RGB_64)  # another crop than the classifier
    seen = analysis(classifier, 4)

    def run(backend: Any, indices: list[int]) -> Any:
        return asyncio.run(frontalize_turned(backend, frontalizer, classifier, seen, indices))

    backend = FakeFrontalizer()
    out = run(backend, [0, 2, 3])
    assert out.frontalized == [True, False, True, True]
    assert backend.most == 3  # all at once
    assert [c.shape for c in backend.inputs] == [(64, 64, 3)] * 3  # the frontalizer's crops
    assert all(c.shape == (48, 48) for c in out.crops)
    for i in (0, 2, 3):
        assert (out.crops[i] == 255).all()  # the generated face, as the classifier's crop
    assert np.array_equal(out.crops[1], seen.crops[1])  # the face that was not turned

    assert run(backend, []).frontalized == [False] * 4 and len(backend.inputs) == 3
    with pytest.raises(BackendError):
        run(FakeFrontalizer(fail=True), [1, 2])
