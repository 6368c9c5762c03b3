"""Decoding and validating uploaded images: the gateway's one image decoder.

Limits are checked before any pixel is decoded: the byte size first, then the pixel count
from the image header (which is how decompression bombs, a few KB that decode to
gigapixels, are refused with 413 before they cost memory). Pillow's own bomb guard,
`Image.MAX_IMAGE_PIXELS`, is set to the same limit by `configure_pillow` and its warning
made an error, so it can never let a larger image through nor flood the log.

The result is always 8-bit RGB with the EXIF orientation applied, whatever the source
mode: palette and transparency (composited on white), CMYK, 16-bit and float grayscale.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import math
import warnings
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from service.problems import ProblemError
from service.settings import Settings

log = logging.getLogger(__name__)

#: Pillow format plugins the gateway opens (GIF: the first frame only).
FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")

#: File signatures of those formats: a file that starts like one but that Pillow cannot
#: open is a damaged image (422), not an unsupported one (415).
SIGNATURES = {
    b"\xff\xd8\xff": "JPEG",
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"GIF87a": "GIF",
    b"GIF89a": "GIF",
    b"BM": "BMP",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
}


def sniff(data: bytes) -> str | None:
    """The format `data` claims to be by its first bytes, if one of `FORMATS`."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return next((f for sig, f in SIGNATURES.items() if data.startswith(sig)), None)


@dataclass(frozen=True)
class ImageLimits:
    """Bounds on an uploaded image."""

    max_bytes: int
    max_pixels: int

    @classmethod
    def from_settings(cls, settings: Settings) -> ImageLimits:
        """The limits `settings` configure (FER_MAX_UPLOAD_BYTES, FER_MAX_PIXELS)."""
        return cls(settings.max_upload_bytes, settings.max_pixels)


@dataclass(frozen=True)
class DecodedImage:
    """An upload decoded to RGB, oriented upright.

    `image` may be smaller than the file (JPEGs are decoded at a reduced scale when they
    are much larger than needed); `width` and `height` are the file's own, upright, and
    `scale` maps `image` coordinates to them.
    """

    image: Image.Image  # mode RGB
    format: str
    width: int
    height: int

    @property
    def scale(self) -> float:
        return self.width / self.image.width


def configure_pillow(max_pixels: int) -> None:
    """Align Pillow's decompression-bomb guard with the gateway's pixel limit.

    Pillow raises `DecompressionBombError` above twice `MAX_IMAGE_PIXELS` and only warns
    between one and two times it; the warning is made an error here so that the guard
    and `decode` agree on one limit.
    """
    Image.MAX_IMAGE_PIXELS = max_pixels
    warnings.filterwarnings("error", category=Image.DecompressionBombWarning)


def _too_many_pixels(width: int, height: int, limits: ImageLimits) -> ProblemError:
    return ProblemError(
        "image-too-large",
        f"the image is {width}x{height} = {width * height} pixels; "
        f"the limit is {limits.max_pixels}",
    )


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        # Pillow's own convert("L") clips these at 255; rescale by the range instead.
        a = np.asarray(image, dtype=np.float64)
        if mode == "F":
            top = 1.0 if a.size and float(np.nanmax(a)) <= 1.0 else 255.0
        else:
            top = 65535.0 if a.size and float(a.max()) > 255 else 255.0
        a = np.clip(np.nan_to_num(a) * (255.0 / top), 0, 255).round().astype(np.uint8)
        return Image.fromarray(a).convert("RGB")
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode in ("PA", "LA", "La", "RGBa"):
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image, mask=image.getchannel("A"))
        return background
    return image.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


def decode(data: bytes, limits: ImageLimits, min_side: int | None = None) -> DecodedImage:
    """Decode an uploaded image file to upright RGB, or raise a 4xx `ProblemError`.

    With `min_side`, a JPEG is decoded at the smallest of its DCT scales (1/2, 1/4, 1/8)
    whose longer side is still at least `min_side`, which is several times faster for
    camera photos; other formats decode at full size.

    413 `payload-too-large` (bytes) or `image-too-large` (pixels, incl. decompression
    bombs), 415 `unsupported-image` (not an image in one of `FORMATS`), 422
    `invalid-image` (empty, truncated or damaged).
    """
    if len(data) > limits.max_bytes:
        raise ProblemError(
            "payload-too-large", f"the image is {len(data)} bytes; the limit is {limits.max_bytes}"
        )
    if not data:
        raise ProblemError("invalid-image", "the image is empty (0 bytes)")
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)
    except UnidentifiedImageError as exc:
        claimed = sniff(data)
        if claimed:
            raise ProblemError("invalid-image", f"the {claimed} image is damaged") from exc
        raise ProblemError(
            "unsupported-image", "not a JPEG, PNG, WebP, BMP, TIFF or GIF image"
        ) from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ProblemError("image-too-large", f"the image has too many pixels: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - a header Pillow recognised but cannot parse
        raise ProblemError("invalid-image", f"the image header is damaged: {exc}") from exc
    fmt = image.format or "unknown"
    width, height = image.size
    if width * height > limits.max_pixels:
        raise _too_many_pixels(width, height, limits)
    if width == 0 or height == 0:
        raise ProblemError("invalid-image", f"the image is {width}x{height} pixels")
    try:
        if min_side and fmt == "JPEG" and max(width, height) > 2 * min_side:
            factor = max(width, height) / min_side
            image.draft("RGB", (math.ceil(width / factor), math.ceil(height / factor)))
        image.load()
        oriented = _orient(image)
        rgb = _to_rgb(oriented)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ProblemError("image-too-large", f"the image has too many pixels: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - any decoder error is the client's input
        raise ProblemError("invalid-image", f"the {fmt} image is damaged: {exc}") from exc
    if rgb.width * rgb.height > limits.max_pixels:
        raise _too_many_pixels(rgb.width, rgb.height, limits)
    scale = width / image.width  # the draft reduction, if any (orientation keeps it)
    upright_w, upright_h = round(rgb.width * scale), round(rgb.height * scale)
    return DecodedImage(rgb, fmt, upright_w, upright_h)


def _orient(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; a broken EXIF block leaves the image as stored."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception as exc:  # noqa: BLE001 - orientation is best effort
        log.info("ignoring unreadable EXIF orientation: %s", exc)
        return image


def header_pixels(data: bytes) -> int:
    """Width x height that an image file's header claims (0 when it is not a readable
    image: `decode` then refuses it without decoding pixels)."""
    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as image:
            width, height = image.size
    except Exception:  # noqa: BLE001 - any refusal is `decode`'s to report
        return 0
    return int(width) * int(height)


class PixelBudget:
    """Pixels of uploads being decoded and analysed at once, across all requests.

    A decoded image costs memory in proportion to its pixels (about 11 bytes per pixel at
    the peak of decode, orientation, colour conversion and detection), so bounding the
    pixels in flight bounds that memory whatever the number of concurrent requests: a
    request waits until its images fit, up to `wait` seconds, then gets 503 `server-busy`.
    """

    def __init__(self, total: int, max_pixels: int, wait: float = 10.0, retry_after: int = 5):
        self.total = total
        self.max_pixels = max_pixels
        self.wait = wait
        self.retry_after = retry_after
        self.in_flight = 0
        #: The most pixels ever held at once (what the budget guarantees <= `total`).
        self.peak = 0
        self._room = asyncio.Condition()

    def cost(self, uploads: Iterable[bytes]) -> int:
        """Pixels `uploads` will hold when decoded; images over `max_pixels` cost nothing,
        as `decode` refuses them from their header."""
        sizes = [header_pixels(data) for data in uploads]
        return min(self.total, sum(p for p in sizes if p <= self.max_pixels))

    def hold(self, uploads: Iterable[bytes]) -> contextlib.AbstractAsyncContextManager[None]:
        """Reserve the pixels of the images `uploads` for the duration of the block."""
        return self.reserve(lambda: self.cost(list(uploads)))

    @contextlib.asynccontextmanager
    async def reserve(self, cost: Callable[[], int]) -> AsyncIterator[None]:
        """Reserve `cost()` pixels (computed off the event loop; at most `total`) for the
        duration of the block."""
        pixels = min(self.total, await asyncio.to_thread(cost))
        async with self._room:
            try:
                await asyncio.wait_for(
                    self._room.wait_for(lambda: self.in_flight + pixels <= self.total), self.wait
                )
            except TimeoutError:
                raise ProblemError(
                    "server-busy",
                    f"too many images are being decoded; retry in {self.retry_after} s",
                    retry_after=self.retry_after,
                ) from None
            self.in_flight += pixels
            self.peak = max(self.peak, self.in_flight)
        try:
            yield
        finally:
            async with self._room:
                self.in_flight -= pixels
                self._room.notify_all()
