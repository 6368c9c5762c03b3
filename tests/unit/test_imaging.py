"""service.imaging.decode: formats, colour modes, orientation and limits."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from PIL import Image

from service.imaging import ImageLimits, decode, sniff
from service.problems import ProblemError

LIMITS = ImageLimits(max_bytes=5_000_000, max_pixels=4_000_000)


def encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return buf.getvalue()


def gradient(size: tuple[int, int] = (64, 48)) -> Image.Image:
    """An RGB image with a distinct colour in each corner, to see where pixels went."""
    w, h = size
    x = np.linspace(0, 255, w)[None, :].repeat(h, 0)
    y = np.linspace(0, 255, h)[:, None].repeat(w, 1)
    return Image.fromarray(np.stack([x, y, 255 - x], -1).astype(np.uint8))


@pytest.mark.parametrize(
    ("fmt", "options"),
    [
        ("JPEG", {"quality": 95}),
        ("PNG", {}),
        ("WEBP", {"lossless": True}),
        ("BMP", {}),
        ("TIFF", {}),
        ("GIF", {}),
    ],
)
def test_formats(fmt: str, options: dict[str, Any]) -> None:
    data = encode(gradient(), fmt, **options)
    out = decode(data, LIMITS)
    assert out.format == fmt and (out.width, out.height) == (64, 48)
    assert out.image.mode == "RGB" and out.scale == 1.0
    assert sniff(data) == fmt


def test_gif_first_frame() -> None:
    frames = [Image.new("RGB", (32, 32), c) for c in [(250, 0, 0), (0, 0, 250)]]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    px = decode(data, LIMITS).image.getpixel((5, 5))
    assert isinstance(px, tuple) and px[0] > 200 and px[2] < 50


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [
        ("L", "PNG"),
        ("LA", "PNG"),
        ("RGBA", "PNG"),
        ("P", "PNG"),
        ("1", "PNG"),
        ("CMYK", "JPEG"),
        ("CMYK", "TIFF"),
        ("I;16", "PNG"),
        ("I;16", "TIFF"),
        ("F", "TIFF"),
        ("YCbCr", "JPEG"),
    ],
)
def test_colour_modes_become_rgb(mode: str, fmt: str) -> None:
    source = gradient()
    if mode == "I;16":
        arr = (np.asarray(source.convert("L"), np.uint16) * 257).astype(np.uint16)
        image = Image.fromarray(arr)
        assert image.mode.startswith("I;16")
    elif mode == "F":
        image = Image.fromarray(np.asarray(source.convert("L"), np.float32) / 255.0)
    else:
        image = source.convert(mode)
    out = decode(encode(image, fmt), LIMITS).image
    assert out.mode == "RGB" and out.size == (64, 48)
    gray = np.asarray(out.convert("L"), np.float64)
    if mode not in ("1", "CMYK", "P"):  # these change the tones; the others keep them
        want = np.asarray(source.convert("L"), np.float64)
        assert np.abs(gray - want).mean() < 6, mode
    assert gray.std() > 20  # not flattened to one tone (the clipping trap of 16-bit)


def test_transparency_is_composited_on_white() -> None:
    image = Image.new("RGBA", (20, 20), (0, 0, 0, 0))
    image.paste((200, 10, 10, 255), (0, 0, 10, 20))
    out = decode(encode(image, "PNG"), LIMITS).image
    assert out.getpixel((15, 5)) == (255, 255, 255)
    assert out.getpixel((5, 5)) == (200, 10, 10)


def test_palette_with_transparency() -> None:
    image = Image.new("P", (10, 10), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.paste(1, (0, 0, 5, 10))
    data = encode(image, "PNG", transparency=0)
    out = decode(data, LIMITS).image
    assert out.getpixel((8, 5)) == (255, 255, 255) and out.getpixel((2, 5)) == (255, 0, 0)


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_exif_orientation(orientation: int) -> None:
    stored = gradient((64, 48))
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = decode(encode(stored, "JPEG", quality=95, exif=exif.tobytes()), LIMITS)
    if orientation in (6, 8):
        assert (out.width, out.height) == (48, 64)
    else:
        assert (out.width, out.height) == (64, 48)


def test_large_jpeg_is_decoded_at_a_reduced_scale() -> None:
    data = encode(gradient((1600, 1200)), "JPEG", quality=90)
    out = decode(data, LIMITS, min_side=400)
    assert (out.width, out.height) == (1600, 1200)
    assert out.image.size == (400, 300) and out.scale == 4.0
    full = decode(data, LIMITS)
    assert full.image.size == (1600, 1200)


@pytest.mark.parametrize(
    ("data", "slug"),
    [
        (b"", "invalid-image"),
        (b"plain text, no image", "unsupported-image"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "invalid-image"),
        (b"GIF89a", "invalid-image"),
        (bytes(LIMITS.max_bytes + 1), "payload-too-large"),
    ],
)
def test_bad_bytes(data: bytes, slug: str) -> None:
    with pytest.raises(ProblemError) as info:
        decode(data, LIMITS)
    assert info.value.kind.slug == slug


def test_pixel_limit_comes_from_the_header() -> None:
    data = encode(Image.new("L", (2100, 2000)), "PNG")  # 4.2 MP, a few KB
    with pytest.raises(ProblemError) as info:
        decode(data, LIMITS)
    assert info.value.kind.slug == "image-too-large" and info.value.status == 413
