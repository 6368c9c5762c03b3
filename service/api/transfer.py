"""`POST /transfer`: queue an expression transfer (TDGAN) between the faces of two photos."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from service.api.deps import JobsDep, ServicesDep
from service.api.jobs import WaitQuery
from service.api.submit import ACCEPTED, IdempotencyKey, multipart_body, submit
from service.jobs.transfer import TRANSFER, TransferParams
from service.schemas import JobStatus

router = APIRouter(tags=["transfer"])


@router.post(
    "/transfer",
    status_code=202,
    response_model=JobStatus,
    summary="Put the expression of one face on another (queued job)",
    openapi_extra=multipart_body(
        "Two photos as multipart/form-data files: `face` (whose identity is kept) and "
        "`expression` (whose expression it takes). JPEG, PNG, WebP, BMP, TIFF or GIF; the "
        "EXIF orientation is applied.",
        TRANSFER,
    ),
    responses=ACCEPTED,
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
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Generate the face of the `face` photo wearing the expression of the `expression`
    photo, with the `tdgan` model (Two-branch Disentangled GAN). The faces are detected
    and aligned like /classify's, largest first.

    The work is queued: the answer is `202` with the job (`Location: /jobs/{id}`); the
    image is at `GET /jobs/{id}/result` once the job succeeded. With `wait=N` the answer
    is the result itself (`200`, as `GET /jobs/{id}/result`) if the job succeeds within
    N seconds. A job fails with `no-face` when a photo has no face (or not that many).
    """
    params = TransferParams(face_index=face_index, expression_index=expression_index)
    return await submit(request, services, jobs, TRANSFER, params, idempotency_key, wait)
