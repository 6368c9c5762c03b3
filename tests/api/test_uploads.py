"""How uploads are read: in memory only, within a time limit, under a decode budget shared
by all requests; and what a client that goes away leaves in the log."""

from __future__ import annotations

import io
import logging
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

import service.pipeline
from service.app import create_app
from service.settings import Settings


def noise_png(width: int, height: int) -> bytes:
    """A PNG that does not compress: about 3 bytes per pixel."""
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", compress_level=0)
    return buf.getvalue()


def flat_png(width: int, height: int) -> bytes:
    """A PNG of many pixels in few bytes."""
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (90, 120, 150)).save(buf, format="PNG")
    return buf.getvalue()


def test_uploads_never_touch_the_disk(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """A multipart part over 1 MiB was spooled to a temporary file by Starlette."""
    opened: list[str] = []

    def refuse(name: str) -> Callable[..., Any]:
        def opener(*args: Any, **kwargs: Any) -> Any:
            opened.append(name)
            raise AssertionError(f"tempfile.{name} called while reading an upload")

        return opener

    for name in ("TemporaryFile", "NamedTemporaryFile", "mkstemp", "mkdtemp"):
        monkeypatch.setattr(tempfile, name, refuse(name))
    image = noise_png(900, 700)
    assert 1024 * 1024 < len(image) < client.app.state.services.settings.max_upload_bytes
    r = client.post("/classify", files={"image": ("big.png", image, "image/png")})
    assert r.status_code == 200, r.text
    assert opened == []


def _raw_request(url: str, head: bytes, body: bytes) -> socket.socket:
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=20)
    sock.sendall(head + body)
    return sock


def _partial_upload(length: int) -> tuple[bytes, bytes]:
    boundary = "XyZ"
    start = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + b"\x89PNG\r\n\x1a\n"
        + b"\0" * 1000
    )
    head = (
        "POST /classify HTTP/1.1\r\nHost: x\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()
    return head, start


def test_a_stalled_upload_is_cut(serve, settings: Settings) -> None:
    """A client that stops sending its body gets 408 after FER_BODY_TIMEOUT seconds."""
    app = create_app(settings.model_copy(update={"body_timeout": 0.5}))
    with serve(app) as url:
        head, start = _partial_upload(100_000)
        sock = _raw_request(url, head, start)
        t0 = time.monotonic()
        answer = b""
        with sock:
            while b"\r\n\r\n" not in answer:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
        waited = time.monotonic() - t0
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"request-timeout" in answer or b"\r\n\r\n" in answer
    assert 0.4 < waited < 15


def test_a_client_that_disconnects_is_logged_at_info(
    serve, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(settings)
    with serve(app) as url, caplog.at_level(logging.INFO):
        head, start = _partial_upload(100_000)
        sock = _raw_request(url, head, start)
        time.sleep(0.3)
        sock.close()
        deadline = time.monotonic() + 10
        while not any("disconnected" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline, "the disconnect was not logged"
            time.sleep(0.05)
        time.sleep(0.2)  # whatever else the server logs about it
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not errors, [(r.name, r.getMessage()) for r in errors]
    assert not any(r.exc_info for r in caplog.records)
    (record,) = [r for r in caplog.records if "disconnected" in r.getMessage()]
    assert record.levelno == logging.INFO


def test_decode_budget_bounds_the_pixels_in_flight(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four concurrent images of 8 megapixels under a 12-megapixel budget: never more
    than one decoded at a time, and all of them answered."""
    in_flight = 0
    peak = 0
    lock = threading.Lock()
    decode = service.pipeline.decode

    def counting(data: bytes, *args: Any) -> Any:
        nonlocal in_flight, peak
        pixels = Image.open(io.BytesIO(data)).size
        size = pixels[0] * pixels[1]
        with lock:
            in_flight += size
            peak = max(peak, in_flight)
        try:
            time.sleep(0.3)  # long enough for the other requests to arrive meanwhile
            return decode(data, *args)
        finally:
            with lock:
                in_flight -= size

    monkeypatch.setattr(service.pipeline, "decode", counting)
    image = flat_png(4000, 2000)
    limit = settings.max_pixels  # 12 megapixels
    budgeted = settings.model_copy(update={"decode_budget_pixels": limit, "decode_wait": 60})
    with TestClient(create_app(budgeted)) as c, ThreadPoolExecutor(4) as pool:
        post = lambda _: c.post("/classify", files={"image": ("a.png", image)})  # noqa: E731
        answers = list(pool.map(post, range(4)))
        budget = c.app.state.services.budget
        assert budget.peak <= limit and budget.in_flight == 0
    assert [r.status_code for r in answers] == [200] * 4, [r.text for r in answers]
    assert peak == 8_000_000  # one image at a time; without the budget, 4 at once


def test_decode_budget_answers_busy_when_full(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, assert_problem
) -> None:
    decode = service.pipeline.decode

    def slow(data: bytes, *args: Any) -> Any:
        time.sleep(1.5)
        return decode(data, *args)

    monkeypatch.setattr(service.pipeline, "decode", slow)
    image = flat_png(4000, 2000)
    update = {"decode_budget_pixels": settings.max_pixels, "decode_wait": 0.2}
    with (
        TestClient(create_app(settings.model_copy(update=update))) as c,
        ThreadPoolExecutor(2) as pool,
    ):
        post = lambda _: c.post("/classify", files={"image": ("a.png", image)})  # noqa: E731
        answers = sorted(pool.map(post, range(2)), key=lambda r: r.status_code)
    assert answers[0].status_code == 200
    assert_problem(answers[1], 503, "server-busy")
    assert int(answers[1].headers["retry-after"]) > 0


def test_settings_refuse_a_budget_below_one_image() -> None:
    with pytest.raises(ValueError, match="must hold one image"):
        Settings(max_pixels=1000, decode_budget_pixels=999)
