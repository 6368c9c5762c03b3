"""Queued jobs: `GET /jobs/{id}`, `GET /jobs/{id}/result`, `DELETE /jobs/{id}`.

The routes that create jobs (`POST /transfer`, `/frontalize`, `/classify/video`) answer
with `job_accepted` and, when asked to wait, with `result_response`. A job's result is a
PNG (transfer, frontalize: its JSON description on request) or a JSON document (video:
its timeline picture on request), as its outcome's `media_type` says.
"""

from __future__ import annotations

import asyncio
import re
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import JSONResponse

from service.api.deps import JobsDep
from service.api.errors import problem_responses
from service.jobs.queues import JobQueue
from service.jobs.records import JobRecord
from service.problems import ProblemError
from service.schemas import JobResult, JobStatus, ResultImage
from service.timeline import timeline_png
from service.video_schemas import VideoAnalysis, VideoResult

router = APIRouter(tags=["jobs"])

#: Longest `?wait=` in seconds: a client that wants longer polls again.
MAX_WAIT = 60.0

JOB_ID = re.compile(r"^[0-9a-f]{32}$")

PNG = "image/png"
JSON = "application/json"

#: OpenAPI description of a job's result (200), shared with the routes that create jobs.
RESULT_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The job's image (`image/png`), or its description as JSON when the "
        "request's `Accept` prefers `application/json`.",
        "content": {
            PNG: {"schema": {"type": "string", "format": "binary"}},
        },
        # FastAPI puts this model under the JSON media type and into components/schemas.
        "model": JobResult,
    }
}

#: OpenAPI description of a video job's result (200).
VIDEO_RESULT_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The tracks of the clip and their expressions (JSON), or with "
        "`format=png` (or an `Accept` that prefers `image/png`) their timeline picture.",
        "content": {PNG: {"schema": {"type": "string", "format": "binary"}}},
        "model": VideoResult,
    }
}

FormatQuery = Annotated[
    Literal["png", "json"] | None,
    Query(
        description="`png`: the picture (a generated face, or a video's timeline); `json`: "
        "the JSON document (a face's description, or a video's tracks); default: as "
        "`Accept` prefers, else the job's own kind of result"
    ),
]

WaitQuery = Annotated[
    float,
    Query(
        ge=0,
        le=MAX_WAIT,
        description=f"seconds (at most {MAX_WAIT:g}) to wait for the job to finish before "
        "answering",
    ),
]


def _not_found(job_id: str) -> ProblemError:
    return ProblemError(
        "job-not-found", f"no job '{job_id}'; it never existed, expired or was deleted"
    )


async def find_job(jobs: JobQueue, job_id: str, wait: float = 0.0) -> JobRecord:
    """The job (after waiting up to `wait` seconds for it to finish), or 404."""
    record = await jobs.get(job_id) if JOB_ID.match(job_id) else None
    if record is not None and wait > 0 and not record.finished:
        record = await jobs.wait(job_id, wait)
    if record is None:
        raise _not_found(job_id)
    return record


def link(request: Request, name: str, **params: str) -> str:
    """The address of route `name`: under FER_PUBLIC_URL when set, else relative to the
    host (the request's Host header is the client's to choose, so it is never used)."""
    path = request.scope.get("root_path", "") + str(request.app.url_path_for(name, **params))
    services = getattr(request.app.state, "services", None)
    base = services.settings.public_url if services is not None else None
    return f"{str(base).rstrip('/')}{path}" if base else path


def job_status(request: Request, record: JobRecord) -> JobStatus:
    """The HTTP view of a job."""
    result_url = (
        link(request, "get_job_result", job_id=record.id) if record.status == "succeeded" else None
    )
    return JobStatus(
        id=record.id,
        kind=record.kind,
        status=record.status,
        created_at=record.created_at,
        started_at=record.started_at,
        finished_at=record.finished_at,
        expires_at=record.expires_at,
        attempts=record.attempts,
        params=record.params,
        error=record.error,
        progress=record.progress,
        url=link(request, "get_job", job_id=record.id),
        result_url=result_url,
    )


def job_accepted(request: Request, record: JobRecord, created: bool) -> JSONResponse:
    """202 with the job's status and its address in `Location`."""
    status = job_status(request, record)
    headers = {"Location": status.url}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(status.model_dump(mode="json"), status_code=202, headers=headers)


def _quality(accept: str, media_type: str) -> float:
    """The q-value `accept` gives `media_type` (its most specific matching range)."""
    main = media_type.split("/")[0]
    best, specificity = 0.0, -1
    for part in accept.split(","):
        fields = [f.strip() for f in part.split(";")]
        kind = fields[0].lower()
        rank = {media_type: 2, f"{main}/*": 1, "*/*": 0}.get(kind)
        if rank is None or rank < specificity:
            continue
        q = 1.0
        for param in fields[1:]:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        best, specificity = q, rank
    return best


def wants_json(request: Request, fmt: str | None = None, default: str = PNG) -> bool:
    """Whether to answer JSON rather than PNG: `fmt` when given, else the request's Accept
    header's preference, else (on a tie, or without Accept) `default`."""
    if fmt is not None:
        return fmt == "json"
    accept = request.headers.get("accept", "")
    json_q, png_q = (_quality(accept, JSON), _quality(accept, PNG)) if accept else (0.0, 0.0)
    return json_q > png_q or (json_q == png_q and default == JSON)


async def result_response(
    request: Request, jobs: JobQueue, record: JobRecord, fmt: str | None = None
) -> Response:
    """The result of a job: the PNG or its JSON description, or a video job's JSON or
    its timeline (200); 409 while it runs or when it failed."""
    if record.status == "failed":
        error = record.error
        raise ProblemError(
            "job-failed",
            f"job '{record.id}' failed: {error.detail if error else 'no reason recorded'}",
            extra={"error": error.model_dump(exclude_none=True)} if error else None,
        )
    if record.status != "succeeded" or record.outcome is None:
        raise ProblemError(
            "job-not-finished",
            f"job '{record.id}' is {record.status}; poll GET "
            f"{link(request, 'get_job', job_id=record.id)} or add ?wait=N",
            retry_after=1,
            extra={"status": record.status},
        )
    url = link(request, "get_job_result", job_id=record.id)
    headers = {"Vary": "Accept", "Location": link(request, "get_job", job_id=record.id)}
    if record.outcome.media_type == JSON:
        return await _document_response(request, jobs, record, fmt, headers)
    if wants_json(request, fmt):
        assert record.finished_at is not None
        outcome = record.outcome
        body = JobResult(
            id=record.id,
            kind=record.kind,
            model=outcome.model,
            image=ResultImage(width=outcome.width, height=outcome.height, url=url),
            inputs=outcome.inputs,
            created_at=record.created_at,
            finished_at=record.finished_at,
        )
        return JSONResponse(body.model_dump(mode="json"), headers=headers)
    image = await jobs.result(record.id)
    if image is None:  # expired between the two reads
        raise _not_found(record.id)
    headers["Content-Disposition"] = f'inline; filename="{record.id}.png"'
    return Response(image, media_type=PNG, headers=headers)


async def _document_response(
    request: Request, jobs: JobQueue, record: JobRecord, fmt: str | None, headers: dict[str, str]
) -> Response:
    """A video job's result: its tracks as JSON, or their timeline as a PNG."""
    data = await jobs.result(record.id)
    if data is None:  # expired between the two reads
        raise _not_found(record.id)
    analysis = VideoAnalysis.model_validate_json(data)
    if not wants_json(request, fmt, default=JSON):
        png = await asyncio.to_thread(timeline_png, analysis)
        headers["Content-Disposition"] = f'inline; filename="{record.id}-timeline.png"'
        return Response(png, media_type=PNG, headers=headers)
    assert record.finished_at is not None
    url = link(request, "get_job_result", job_id=record.id)
    body = VideoResult(
        **analysis.model_dump(),
        id=record.id,
        timeline_url=f"{url}?format=png",
        created_at=record.created_at,
        finished_at=record.finished_at,
    )
    return JSONResponse(body.model_dump(mode="json"), headers=headers)


JobId = Annotated[str, Path(description="the job's id, as `POST /transfer` returned it")]


@router.get(
    "/jobs/{job_id}",
    response_model=JobStatus,
    summary="The status of a job",
    responses=problem_responses("job-not-found", "queue-unavailable"),
)
async def get_job(job_id: JobId, request: Request, jobs: JobsDep) -> JobStatus:
    """Where the job stands (`queued`, `running`, `succeeded`, `failed`), its timestamps,
    the problem it failed with, and the address of its result once it succeeded. Jobs are
    kept for `FER_JOB_TTL` seconds after they finish (see `expires_at`)."""
    return job_status(request, await find_job(jobs, job_id))


@router.get(
    "/jobs/{job_id}/result",
    summary="The result of a job",
    response_class=Response,
    responses={
        200: {
            **RESULT_RESPONSE[200],
            "description": "The job's image (`image/png`), or its description as JSON "
            "(`format=json`, or an `Accept` that prefers `application/json`); for a video "
            "job its tracks as JSON (a `VideoResult`), or their timeline (`format=png`).",
            "model": JobResult | VideoResult,
        },
        **problem_responses(
            "job-not-found",
            "job-not-finished",
            "job-failed",
            "invalid-request",
            "queue-unavailable",
        ),
    },
)
async def get_job_result(
    job_id: JobId,
    request: Request,
    jobs: JobsDep,
    wait: WaitQuery = 0.0,
    format: FormatQuery = None,
) -> Response:
    """The generated image as `image/png`, or, with `Accept: application/json` (or
    `format=json`), its size, the model that made it and the face used from each upload.
    A video job's result is JSON (its face tracks and their expressions), or with
    `format=png` the timeline of each track's expressions. 409 `job-not-finished` while
    the job is queued or running (after waiting `wait` seconds), 409 `job-failed` with
    the job's `error` when it failed."""
    record = await find_job(jobs, job_id, wait)
    return await result_response(request, jobs, record, format)


@router.delete(
    "/jobs/{job_id}",
    status_code=204,
    response_class=Response,
    summary="Delete a job",
    responses=problem_responses("job-not-found", "queue-unavailable"),
)
async def delete_job(job_id: JobId, jobs: JobsDep) -> Response:
    """Forget the job, its uploaded images and its result now rather than at expiry. A job
    that is running finishes, but what it produces is dropped."""
    if not (JOB_ID.match(job_id) and await jobs.delete(job_id)):
        raise _not_found(job_id)
    return Response(status_code=204)
