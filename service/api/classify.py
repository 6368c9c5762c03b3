"""`POST /classify`: every face of a photo with its expression."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from service.api.deps import ServicesDep
from service.api.errors import problem_responses
from service.api.uploads import read_uploads
from service.faces import Detection
from service.pipeline import image_info, located
from service.problems import ProblemError
from service.schemas import ClassifyResponse, Face, ModelRef, Prediction

log = logging.getLogger(__name__)

router = APIRouter(tags=["classify"])

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


def _face(detection: Detection, prediction: Prediction) -> Face:
    where = located(detection)
    return Face(
        box=where.box,
        landmarks=where.landmarks,
        score=where.score,
        yaw=where.yaw,
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
        "request-timeout",
        "server-busy",
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
    entry = services.models.classifier(model)
    cap = services.settings.max_faces
    if max_faces is not None and max_faces > cap:
        raise ProblemError("invalid-request", f"max_faces must be at most {cap}")
    if neutral and entry.kind != "derl":
        raise ProblemError(
            "invalid-request",
            f"neutral=true needs a DeRL model; '{entry.name}' is a {entry.kind}",
        )
    request.state.model = entry.name
    upload = await read_uploads(
        request,
        services.pipeline.limits,
        ("image",),
        raw_body=True,
        timeout=services.settings.body_timeout,
    )
    async with services.budget.hold(upload.values()):
        analysis = await asyncio.to_thread(
            services.pipeline.analyse, upload["image"], entry.input, max_faces or cap
        )
    t0 = time.perf_counter()
    predictions: Sequence[Prediction] = await services.backend.predict(
        entry, analysis.crops, neutral=neutral
    )
    timings = {**analysis.timings, "classify": time.perf_counter() - t0}
    timings["total"] = time.perf_counter() - started
    response.headers["Server-Timing"] = _server_timing(timings)
    services.metrics.observe_steps(timings)
    services.metrics.faces.labels(entry.name).observe(len(analysis.faces))
    log.info(
        "classify model=%s image=%dx%d faces=%d %s",
        entry.name,
        analysis.image.width,
        analysis.image.height,
        len(analysis.faces),
        " ".join(f"{k}={v * 1000:.1f}ms" for k, v in timings.items()),
    )
    return ClassifyResponse(
        image=image_info(analysis.image),
        model=ModelRef(name=entry.name, version=entry.version),
        faces=[_face(d, p) for d, p in zip(analysis.faces, predictions, strict=True)],
    )
