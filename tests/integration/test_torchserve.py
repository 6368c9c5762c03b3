"""The `.mar` runs in a real TorchServe exactly as `fer-train evaluate` runs it in-process."""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from service.launcher.process import TorchServe
from training.evaluate import load_handler

pytestmark = pytest.mark.integration

MODEL = "compact"


def face_crops(count: int, seed: int = 0) -> np.ndarray:
    """Synthetic aligned 48x48 grayscale faces: head, eyes, brows and a mouth whose shape
    varies (smile, frown, open), under uneven light and sensor noise."""
    rng = np.random.default_rng(seed)
    crops = []
    for _ in range(count):
        img = Image.new("L", (48, 48), int(rng.integers(10, 90)))
        d = ImageDraw.Draw(img)
        cx, cy = 24 + int(rng.integers(-2, 3)), 26 + int(rng.integers(-2, 3))
        w, h = int(rng.integers(15, 19)), int(rng.integers(19, 23))
        d.ellipse([cx - w, cy - h, cx + w, cy + h], fill=int(rng.integers(130, 210)))
        eye_y = cy - h // 3
        brow = int(rng.integers(-2, 3))  # raised, flat or frowning brows
        for side in (-1, 1):
            ex = cx + side * 7
            d.ellipse([ex - 3, eye_y - 2, ex + 3, eye_y + 2], fill=int(rng.integers(20, 70)))
            d.line([ex - 4, eye_y - 5 + side * brow, ex + 4, eye_y - 5 - side * brow], fill=40)
        my, mw = cy + h // 2, int(rng.integers(5, 9))
        shape = rng.integers(0, 3)
        if shape == 0:  # smile
            d.arc([cx - mw, my - 5, cx + mw, my + 3], 20, 160, fill=30, width=2)
        elif shape == 1:  # frown
            d.arc([cx - mw, my - 1, cx + mw, my + 7], 200, 340, fill=30, width=2)
        else:  # open mouth
            d.ellipse([cx - mw // 2, my - 3, cx + mw // 2, my + 4], fill=25)
        img = img.filter(ImageFilter.GaussianBlur(0.8))
        light = np.linspace(rng.uniform(0.6, 1.0), rng.uniform(1.0, 1.3), 48)[None, :]
        arr = np.asarray(img, np.float32) * light + rng.normal(0, 4, (48, 48))
        crops.append(np.clip(arr, 0, 255).astype(np.uint8))
    return np.stack(crops)


def png(crop: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(crop, mode="L").save(buf, format="PNG")
    return buf.getvalue()


def post(url: str, body: bytes, content_type: str) -> tuple[int, Any]:
    req = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": content_type}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def test_archive_is_served_with_its_batching(torchserve: TorchServe) -> None:
    desc = torchserve.describe(MODEL)
    assert desc["modelName"] == MODEL
    assert desc["batchSize"] >= 1 and desc["maxBatchDelay"] >= 0
    assert any(w["status"] == "READY" for w in desc["workers"])


def test_torchserve_matches_local_handler(torchserve: TorchServe, model_store: Path) -> None:
    crops = face_crops(20)
    url = f"{torchserve.inference_url}/predictions/{MODEL}"
    # Concurrent requests, so that TorchServe's dynamic batching groups some of them.
    with ThreadPoolExecutor(max_workers=8) as pool:
        replies = list(pool.map(lambda c: post(url, png(c), "image/png"), crops))
    assert all(status == 200 for status, _ in replies), replies

    handler = load_handler(model_store / f"{MODEL}.mar")  # what `fer-train evaluate` runs
    expected = handler.predict_arrays(crops)
    served = np.array([[body["probabilities"][c] for c in handler.classes] for _, body in replies])
    diff = float(np.abs(served - expected).max())
    print(f"\nmax |TorchServe - local| over {len(crops)} crops: {diff:.3g}")
    assert diff <= 1e-5
    labels = [body["label"] for _, body in replies]
    assert labels == [handler.classes[i] for i in expected.argmax(1)]


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"this is not an image", "application/octet-stream"),
        (png(np.zeros((48, 48), np.uint8))[:40], "image/png"),  # truncated PNG
        (b'{"image": "bm90IGFuIGltYWdl"}', "application/json"),  # base64 of text
    ],
    ids=["text", "truncated-png", "json-not-image"],
)
def test_bad_body_is_a_client_error(torchserve: TorchServe, body: bytes, content_type: str) -> None:
    status, reply = post(f"{torchserve.inference_url}/predictions/{MODEL}", body, content_type)
    assert status == 400, reply
    assert "crop" in reply["message"] or "image" in reply["message"]


def test_metrics_are_prometheus_text(torchserve: TorchServe) -> None:
    with urllib.request.urlopen(f"{torchserve.metrics_url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    assert resp.status == 200
    assert "# TYPE" in text
