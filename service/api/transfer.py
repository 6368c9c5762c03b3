"""`POST /transfer`: queue an expression transfer (TDGAN) between the faces of two photos."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.api.classify import MULTIPART_SLACK, _limited
from service.api.deps import ServicesDep
from service.api.jobs import RESULT_RESPONSE, JobsDep, WaitQuery, job_accepted, result_response
from service.errors import ProblemError, problem_responses
from service.imaging import ImageLimits, decode
from service.jobkinds import TRANSFER, JobRuntime, TransferParams
from service.schemas import JobStatus

log = logging.getLogger(__name__)

router = APIRouter(tags=["transfer"])

REQUEST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "Two photos as multipart/form-data files: `face` (whose identity is "
        "kept) and `expression` (whose expression it takes). JPEG, PNG, WebP, BMP, TIFF or "
        "GIF; the EXIF orientation is applied.",
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["face", "expression"],
                    "properties": {
                        "face": {"type": "string", "format": "binary"},
                        "expression": {"type": "string", "format": "binary"},
                    },
                }
            }
        },
    }
}


async def read_images(
    request: Request, limits: ImageLimits, names: Sequence[str]
) -> dict[str, bytes]:
    """The uploaded files `names` of a multipart/form-data body, each within the byte limit
    (enforced while the body streams in, as for /classify)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    wanted = " and ".join(f"'{n}'" for n in names)
    if content_type != "multipart/form-data":
        raise ProblemError(
            "unsupported-media-type",
            f"send multipart/form-data with the files {wanted} "
            f"(got {content_type or 'no content type'})",
        )
    limit = len(names) * limits.max_bytes + MULTIPART_SLACK
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise ProblemError("payload-too-large", f"the body is {length} bytes; the limit is {limit}")
    limited = Request(request.scope, _limited(request.receive, limit))
    try:
        form = await limited.form(max_files=len(names) + 2, max_fields=16)
    except StarletteHTTPException as exc:
        raise ProblemError("missing-image", f"malformed multipart body: {exc.detail}") from exc
    try:
        images: dict[str, bytes] = {}
        for name in names:
            upload = form.get(name)
            if not isinstance(upload, UploadFile):
                fields = ", ".join(sorted(set(form.keys()))) or "none"
                what = "a text field, not a file" if upload is not None else "missing"
                raise ProblemError(
                    "missing-image", f"the multipart field '{name}' is {what} (fields: {fields})"
                )
            images[name] = await upload.read()
        return images
    finally:
        await form.close()


def validate_images(images: dict[str, bytes], limits: ImageLimits, min_side: int) -> None:
    """Decode every upload once, so that a bad file is a 4xx now rather than a failed job."""
    for name, data in images.items():
        try:
            decode(data, limits, min_side)
        except ProblemError as exc:
            raise ProblemError(exc.kind.slug, f"the {name} image: {exc.detail}") from exc


@router.post(
    "/transfer",
    status_code=202,
    response_model=JobStatus,
    summary="Put the expression of one face on another (queued job)",
    openapi_extra=REQUEST_BODY,
    responses={
        202: {
            "description": "The job is queued (or, with `wait`, has not succeeded in time).",
            "headers": {
                "Location": {
                    "description": "the job's address (`GET /jobs/{id}`)",
                    "schema": {"type": "string"},
                },
                "Idempotent-Replayed": {
                    "description": "`true` when the Idempotency-Key's earlier job is returned",
                    "schema": {"type": "string"},
                },
            },
        },
        **RESULT_RESPONSE,
        **problem_responses(
            "missing-image",
            "payload-too-large",
            "image-too-large",
            "unsupported-media-type",
            "unsupported-image",
            "invalid-image",
            "invalid-request",
            "model-not-ready",
            "queue-unavailable",
            "queue-full",
        ),
    },
)
async def transfer(
    request: Request,
    services: ServicesDep,
    jobs: JobsDep,
    face_index: Annotated[
        int, Query(ge=0, description="which face of `face` to use (0 = the largest)")
    ] = 0,
    expression_index: Annotated[
        int, Query(ge=0, description="which face of `expression` to use (0 = the largest)")
    ] = 0,
    wait: WaitQuery = 0.0,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=255,
            description="a retried POST with the same key returns the first job (for as "
            "long as that job is kept) instead of queueing another",
        ),
    ] = None,
) -> Response:
    """Generate the face of the `face` photo wearing the expression of the `expression`
    photo, with the `tdgan` model (Two-branch Disentangled GAN). The faces are detected
    and aligned like /classify's, largest first.

    The work is queued: the answer is `202` with the job (`Location: /jobs/{id}`); the
    image is at `GET /jobs/{id}/result` once the job succeeded. With `wait=N` the answer
    is the result itself (`200`, as `GET /jobs/{id}/result`) if the job succeeds within
    N seconds. A job fails with `no-face` when a photo has no face (or not that many).
    """
    runtime = JobRuntime(services.settings, services.catalog, services.detector, services.backend)
    runtime.model(TRANSFER.model, TRANSFER.model_kind)  # 503 now rather than a failed job
    params = TransferParams(face_index=face_index, expression_index=expression_index)
    images = await read_images(request, services.limits, TRANSFER.inputs)
    await asyncio.to_thread(
        validate_images, images, services.limits, services.settings.decode_min_side
    )
    record, created = await jobs.submit(TRANSFER.name, images, params, idempotency_key)
    if wait > 0 and not record.finished:
        record = await jobs.wait(record.id, wait) or record
    if wait > 0 and record.status == "succeeded":
        return await result_response(request, jobs, record)
    return job_accepted(request, record, created)
