"""`POST /frontalize`: queue the frontal view of a face (pose frontalization)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from service.api.deps import JobsDep, ServicesDep
from service.api.jobs import WaitQuery
from service.api.submit import ACCEPTED, IdempotencyKey, multipart_body, submit
from service.jobs.frontalize import FRONTALIZE, FrontalizeParams
from service.schemas import JobStatus

router = APIRouter(tags=["frontalize"])


@router.post(
    "/frontalize",
    status_code=202,
    response_model=JobStatus,
    summary="The frontal view of a turned face (queued job)",
    openapi_extra=multipart_body(
        "One photo as a multipart/form-data file `face`. JPEG, PNG, WebP, BMP, TIFF or GIF; "
        "the EXIF orientation is applied.",
        FRONTALIZE,
    ),
    responses=ACCEPTED,
)
async def frontalize(
    request: Request,
    services: ServicesDep,
    jobs: JobsDep,
    face_index: Annotated[
        int, Query(ge=0, description="which face of `face` to use (0 = the largest)")
    ] = 0,
    wait: WaitQuery = 0.0,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Generate the frontal view of the face of the `face` photo with the `frontalize`
    model (a two-path GAN of the DR-GAN family), as its aligned crop. The face is detected
    and aligned like /classify's (its `yaw` there says how turned it is).

    Queued like `/transfer`: `202` with the job, the PNG at `GET /jobs/{id}/result`, or
    with `wait=N` the result itself if the job succeeds within N seconds; `503
    model-not-ready` while no `frontalize` archive is in the model store.
    """
    params = FrontalizeParams(face_index=face_index)
    return await submit(request, services, jobs, FRONTALIZE, params, idempotency_key, wait)
