"""`POST /classify`: every face of a photo with its expression."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Query, Request, Response
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Message, Receive

from service.api.deps import ServicesDep
from service.archive import InputSpec
from service.errors import ProblemError, problem_responses
from service.faces import LANDMARKS, Detection, FaceDetector, crops_for
from service.imaging import DecodedImage, ImageLimits, decode
from service.schemas import (
    Box,
    ClassifyResponse,
    Face,
    ImageInfo,
    Landmarks,
    ModelRef,
    Point,
    Prediction,
)

log = logging.getLogger(__name__)

router = APIRouter(tags=["classify"])

#: Room for multipart boundaries and part headers on top of the image's own byte limit.
MULTIPART_SLACK = 64 * 1024

#: Raw request bodies taken as the image itself.
RAW_TYPES = ("image/", "application/octet-stream")

REQUEST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "The photo: a multipart/form-data field `image` (a file), or the "
        "image file itself as the body with an `image/*` content type. JPEG, PNG, WebP, "
        "BMP, TIFF or GIF (first frame); the EXIF orientation is applied.",
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {
                        "image": {
                            "type": "string",
                            "format": "binary",
                            "description": "the image file",
                        }
                    },
                }
            },
            "image/*": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


def _limited(receive: Receive, limit: int) -> Receive:
    """`receive` that fails with 413 once the body grows past `limit` bytes."""
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise ProblemError("payload-too-large", f"the body exceeds {limit} bytes")
        return message

    return wrapped


async def read_image(request: Request, limits: ImageLimits) -> bytes:
    """The uploaded image file from a multipart field `image` or a raw `image/*` body.

    The size limit is enforced while the body streams in (and up front from
    Content-Length), so a huge upload is refused without being read.
    """
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    multipart = content_type == "multipart/form-data"
    limit = limits.max_bytes + (MULTIPART_SLACK if multipart else 0)
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise ProblemError("payload-too-large", f"the body is {length} bytes; the limit is {limit}")
    limited = Request(request.scope, _limited(request.receive, limit))
    if multipart:
        try:
            form = await limited.form(max_files=4, max_fields=16)
        except StarletteHTTPException as exc:  # Starlette's multipart parser errors
            raise ProblemError("missing-image", f"malformed multipart body: {exc.detail}") from exc
        try:
            upload = form.get("image")
            if not isinstance(upload, UploadFile):
                fields = ", ".join(sorted(set(form.keys()))) or "none"
                what = "a text field, not a file" if upload is not None else "missing"
                raise ProblemError(
                    "missing-image",
                    f"the multipart field 'image' is {what} (fields: {fields})",
                )
            return await upload.read()
        finally:
            await form.close()
    if content_type.startswith(RAW_TYPES):
        return b"".join([chunk async for chunk in limited.stream()])
    if not content_type and length in (None, "0") and "transfer-encoding" not in request.headers:
        raise ProblemError(
            "missing-image", "no image: send multipart/form-data with a field 'image'"
        )
    raise ProblemError(
        "unsupported-media-type",
        "send multipart/form-data with a field 'image', or the image as the body with an "
        f"image/* content type (got {content_type or 'no content type'})",
    )


@dataclass
class Analysis:
    """The CPU-bound part of a request: decoded image, faces and their crops."""

    image: DecodedImage
    faces: list[Detection]
    crops: list[np.ndarray]
    timings: dict[str, float]


def analyse(
    data: bytes,
    limits: ImageLimits,
    detector: FaceDetector,
    spec: InputSpec,
    max_faces: int,
    decode_min_side: int | None = None,
) -> Analysis:
    """Decode, detect (keeping the `max_faces` largest faces) and align, timing each step.

    `faces` are in the coordinates of the image file, whatever scale it was decoded at.
    """
    t0 = time.perf_counter()
    image = decode(data, limits, decode_min_side)
    t1 = time.perf_counter()
    faces = sorted(detector.detect(np.asarray(image.image)), key=lambda f: f.area, reverse=True)
    faces = faces[:max_faces]
    t2 = time.perf_counter()
    crops = crops_for(image.image, faces, spec)
    t3 = time.perf_counter()
    timings = {"decode": t1 - t0, "detect": t2 - t1, "align": t3 - t2}
    return Analysis(image, [f.scaled(image.scale) for f in faces], crops, timings)


def _face(detection: Detection, prediction: Prediction) -> Face:
    x1, y1, x2, y2 = (round(v, 1) for v in detection.box)
    points = {
        name: Point(x=round(float(x), 1), y=round(float(y), 1))
        for name, (x, y) in zip(LANDMARKS, detection.landmarks, strict=True)
    }
    return Face(
        box=Box(x=x1, y=y1, width=round(x2 - x1, 1), height=round(y2 - y1, 1)),
        landmarks=Landmarks(**points),
        score=round(detection.score, 4),
        expression=prediction.label,
        probabilities=prediction.probabilities,
        neutral_face=prediction.neutral,
    )


def _server_timing(timings: dict[str, float]) -> str:
    return ", ".join(f"{k};dur={v * 1000:.1f}" for k, v in timings.items())


@router.post(
    "/classify",
    response_model=ClassifyResponse,
    summary="Classify the expression of every face in a photo",
    openapi_extra=REQUEST_BODY,
    responses=problem_responses(
        "missing-image",
        "unknown-model",
        "payload-too-large",
        "image-too-large",
        "unsupported-media-type",
        "unsupported-image",
        "invalid-image",
        "invalid-request",
        "not-a-classifier",
        "backend-error",
        "backend-unavailable",
        "model-not-ready",
        "backend-timeout",
    ),
)
async def classify(
    request: Request,
    response: Response,
    services: ServicesDep,
    model: Annotated[
        str | None,
        Query(
            description="classifier to use (see GET /models); default: derl if present, "
            "else compact, else the first classifier",
            examples=["compact"],
        ),
    ] = None,
    max_faces: Annotated[
        int | None,
        Query(
            ge=1,
            description="classify at most this many faces, the largest ones (default and "
            "upper bound: the server's FER_MAX_FACES, 50 unless configured)",
        ),
    ] = None,
    neutral: Annotated[
        bool,
        Query(
            description="also return every face's generated neutral face (base64 PNG); "
            "only for DeRL models (kind `derl`)",
        ),
    ] = False,
) -> ClassifyResponse:
    """Find the faces (box, 5 landmarks, detection score), align each to the model's input
    crop and classify its expression. Faces are sorted by size, largest first; an image
    without a face gives an empty list. Step durations are in the `Server-Timing` header.
    """
    started = time.perf_counter()
    entry = services.classifier(model)
    cap = services.settings.max_faces
    if max_faces is not None and max_faces > cap:
        raise ProblemError("invalid-request", f"max_faces must be at most {cap}")
    if neutral and entry.kind != "derl":
        raise ProblemError(
            "invalid-request",
            f"neutral=true needs a DeRL model; '{entry.name}' is a {entry.kind}",
        )
    data = await read_image(request, services.limits)
    analysis = await asyncio.to_thread(
        analyse,
        data,
        services.limits,
        services.detector,
        entry.input,
        max_faces or cap,
        services.settings.decode_min_side,
    )
    t0 = time.perf_counter()
    predictions: Sequence[Prediction] = await services.backend.predict(
        entry, analysis.crops, neutral=neutral
    )
    timings = {**analysis.timings, "classify": time.perf_counter() - t0}
    timings["total"] = time.perf_counter() - started
    response.headers["Server-Timing"] = _server_timing(timings)
    log.info(
        "classify model=%s image=%dx%d faces=%d %s",
        entry.name,
        analysis.image.width,
        analysis.image.height,
        len(analysis.faces),
        " ".join(f"{k}={v * 1000:.1f}ms" for k, v in timings.items()),
    )
    return ClassifyResponse(
        image=ImageInfo(
            width=analysis.image.width, height=analysis.image.height, format=analysis.image.format
        ),
        model=ModelRef(name=entry.name, version=entry.version),
        faces=[_face(d, p) for d, p in zip(analysis.faces, predictions, strict=True)],
    )
