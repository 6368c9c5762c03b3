"""`POST /transfer`: queue an expression transfer (TDGAN) between the faces of two photos."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response

from service.api.deps import JobsDep, ServicesDep
from service.api.errors import problem_responses
from service.api.jobs import RESULT_RESPONSE, WaitQuery, job_accepted, result_response
from service.api.uploads import read_uploads
from service.jobs.transfer import TRANSFER, TransferParams
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
            "idempotency-key-reused",
            "request-timeout",
            "server-busy",
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
            description="a retried POST with the same key and the same request returns the "
            "first job (for as long as that job is kept) instead of queueing another; keys "
            "belong to the caller (API key, or client address), and the same key with another "
            "request is 422",
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
    services.models.require(TRANSFER.model, TRANSFER.model_kind)  # 503 now, not a failed job
    params = TransferParams(face_index=face_index, expression_index=expression_index)
    request.state.model = TRANSFER.model
    images = await read_uploads(
        request, services.pipeline.limits, TRANSFER.inputs, timeout=services.settings.body_timeout
    )
    # Decoded now, so that a bad file is a 4xx rather than a failed job; a job run in this
    # process runs on these pixels instead of decoding the uploads again.
    async with services.budget.hold(images.values()):
        decoded = await asyncio.to_thread(services.pipeline.decode_uploads, images)
    record, created = await jobs.submit(TRANSFER.name, images, params, idempotency_key, decoded)
    if wait > 0 and not record.finished:
        record = await jobs.wait(record.id, wait) or record
    if wait > 0 and record.status == "succeeded":
        return await result_response(request, jobs, record)
    return job_accepted(request, record, created)
