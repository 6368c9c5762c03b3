"""Bad requests to POST /classify get their documented 4xx problem, never a 500 or a hang."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from starlette.types import Message

from service.settings import Settings

ProblemCheck = Callable[..., dict[str, Any]]

#: Larger than any sensible FER_MAX_PIXELS, including the default (40 MP).
FIFTY_MP = (8000, 6250)


def png_of_zeros(width: int, height: int) -> bytes:
    """A valid black grayscale PNG of any size, built without holding its pixels: a few KB
    that decode to width x height bytes (how a decompression bomb is made)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    deflate = zlib.compressobj(1)
    row = bytes(width + 1)  # filter byte + pixels
    idat = b"".join(deflate.compress(row) for _ in range(height)) + deflate.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def jpeg_claiming(width: int, height: int) -> bytes:
    """A small real JPEG whose frame header was edited to claim width x height."""
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (128, 90, 60)).save(buf, format="JPEG")
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def small_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (320, 240), (30, 120, 200)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def post_file(client: TestClient, data: bytes, field: str = "image", **params: object):
    return client.post("/classify", files={field: ("upload.bin", data)}, params=params)


@pytest.mark.parametrize(
    ("name", "data", "status", "slug"),
    [
        ("not an image", b"hello, this is text, not a picture\n" * 20, 415, "unsupported-image"),
        ("zero bytes", b"", 422, "invalid-image"),
        ("truncated JPEG", small_jpeg()[:400], 422, "invalid-image"),
        ("JPEG header only", small_jpeg()[:120], 422, "invalid-image"),
        ("PNG signature only", b"\x89PNG\r\n\x1a\n", 422, "invalid-image"),
        ("50 MP image", png_of_zeros(*FIFTY_MP), 413, "image-too-large"),
        ("decompression bomb (PNG)", png_of_zeros(20000, 20000), 413, "image-too-large"),
        ("decompression bomb (JPEG header)", jpeg_claiming(60000, 60000), 413, "image-too-large"),
        ("PDF", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n", 415, "unsupported-image"),
        ("SVG", b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>', 415,
         "unsupported-image"),
    ],
)  # fmt: skip
def test_bad_image_files(
    client: TestClient,
    assert_problem: ProblemCheck,
    name: str,
    data: bytes,
    status: int,
    slug: str,
) -> None:
    assert_problem(post_file(client, data), status, slug)


def test_limits_are_what_the_matrix_assumes(settings: Settings) -> None:
    assert FIFTY_MP[0] * FIFTY_MP[1] > settings.max_pixels
    assert len(png_of_zeros(*FIFTY_MP)) < settings.max_upload_bytes  # refused for its pixels


def test_wrong_field_name(client: TestClient, assert_problem: ProblemCheck) -> None:
    body = assert_problem(post_file(client, small_jpeg(), field="file"), 400, "missing-image")
    assert "file" in str(body["detail"])


def test_image_as_a_text_field(client: TestClient, assert_problem: ProblemCheck) -> None:
    r = client.post("/classify", files={"image": (None, "not a file")})
    assert_problem(r, 400, "missing-image")


def test_no_body(client: TestClient, assert_problem: ProblemCheck) -> None:
    assert_problem(client.post("/classify"), 400, "missing-image")


@pytest.mark.parametrize(
    "content_type", ["application/json", "text/plain", "application/x-www-form-urlencoded"]
)
def test_unsupported_content_type(
    client: TestClient, assert_problem: ProblemCheck, content_type: str
) -> None:
    r = client.post("/classify", content=small_jpeg(), headers={"Content-Type": content_type})
    assert_problem(r, 415, "unsupported-media-type")


def test_malformed_multipart(client: TestClient, assert_problem: ProblemCheck) -> None:
    r = client.post(
        "/classify",
        content=b"--xyz\r\nContent-Disposition: form-data; name=image\r\n\r\nnope",
        headers={"Content-Type": "multipart/form-data; boundary=xyz"},
    )
    assert r.status_code in (400, 415, 422), r.text
    assert r.headers["content-type"].startswith("application/problem+json")


def test_unknown_model(client: TestClient, assert_problem: ProblemCheck) -> None:
    body = assert_problem(post_file(client, small_jpeg(), model="resnet"), 404, "unknown-model")
    assert "compact" in str(body["detail"])  # tells which models exist


@pytest.mark.parametrize("value", ["0", "-3", "many", "100000"])
def test_bad_max_faces(client: TestClient, assert_problem: ProblemCheck, value: str) -> None:
    assert_problem(post_file(client, small_jpeg(), max_faces=value), 422, "invalid-request")


def test_huge_body_refused_by_content_length(
    client: TestClient, assert_problem: ProblemCheck, settings: Settings
) -> None:
    data = b"\xff\xd8" + bytes(settings.max_upload_bytes + 200_000)
    assert_problem(post_file(client, data), 413, "payload-too-large")
    r = client.post("/classify", content=data, headers={"Content-Type": "image/jpeg"})
    assert_problem(r, 413, "payload-too-large")


def test_huge_streamed_body_is_cut_off(client: TestClient, settings: Settings) -> None:
    """Without Content-Length (a chunked upload) the limit applies while the body streams in:
    the app answers 413 and stops reading long before the end. TestClient buffers whole
    bodies, so this speaks ASGI to the started app directly."""
    chunk = bytes(256 * 1024)
    total = settings.max_upload_bytes * 8 // len(chunk)
    received = 0
    sent: list[Message] = []

    async def receive() -> Message:
        nonlocal received
        received += 1
        return {"type": "http.request", "body": chunk, "more_body": received < total}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/classify",
        "raw_path": b"/classify",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"image/jpeg"), (b"transfer-encoding", b"chunked")],
        "client": ("127.0.0.1", 1234),
        "server": ("testserver", 80),
        "state": {},
    }

    async def run() -> None:
        await client.app(scope, receive, send)

    client.portal.call(run)  # type: ignore[union-attr]
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert start["status"] == 413
    assert dict(start["headers"])[b"content-type"] == b"application/problem+json"
    assert received <= settings.max_upload_bytes // len(chunk) + 2


def test_image_exactly_at_the_byte_limit_is_read(client: TestClient, settings: Settings) -> None:
    data = small_jpeg()
    padded = data + bytes(settings.max_upload_bytes - len(data))  # JPEG decoders ignore the tail
    r = post_file(client, padded)
    assert r.status_code == 200, r.text


def test_unknown_route_and_method(client: TestClient, assert_problem: ProblemCheck) -> None:
    assert_problem(client.get("/nowhere"), 404, "not-found")
    assert_problem(client.get("/classify"), 405, "method-not-allowed")


def test_errors_never_500(client: TestClient, photo: Callable[[str], bytes]) -> None:
    """Random corruptions of a real photo: each is a 200 or a 4xx problem."""
    import random

    data = bytearray(photo("grace_hopper.jpg"))
    rng = random.Random(0)
    for _ in range(12):
        broken = bytearray(data)
        for _ in range(rng.randint(1, 40)):
            broken[rng.randrange(len(broken))] = rng.randrange(256)
        cut = rng.randint(2, len(broken))
        r = post_file(client, bytes(broken[:cut]))
        assert r.status_code == 200 or 400 <= r.status_code < 500, r.text
