"""How a route queues a job (`POST /transfer`, `/frontalize`, `/classify/video`): the
shared request handling and OpenAPI description of every job-creating route.

A route parses its own parameters, then `submit` does the rest the same way for every
kind: 503 at once when the kind's model is missing (not a failed job later), the uploads
read with the streamed byte limit of their media and decoded now (a bad file is a 4xx,
and a job run in this process runs on these pixels; a video is probed now and its frames
are decoded by the job) within the decode budget, the job queued in the caller's view of
the queue (or its Idempotency-Key's earlier job returned), and with `?wait=N` the result
itself if the job succeeds in time.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Annotated, Any

from fastapi import Header, Request, Response
from pydantic import BaseModel

from service.api.deps import Services
from service.api.errors import problem_responses
from service.api.jobs import RESULT_RESPONSE, job_accepted, result_response
from service.api.uploads import read_uploads
from service.jobs.kinds import JobKind
from service.jobs.queues import JobQueue

IdempotencyKey = Annotated[
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
]


def multipart_body(description: str, kind: JobKind) -> dict[str, Any]:
    """The `openapi_extra` of a route whose request is the kind's uploads as multipart
    files."""
    properties = {name: {"type": "string", "format": "binary"} for name in kind.inputs}
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": list(kind.inputs),
                        "properties": properties,
                    }
                }
            },
        }
    }


#: The answers of every job-creating route: 202 (queued), 200 (`wait`), and its problems.
ACCEPTED: dict[int | str, dict[str, Any]] = {
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
}


async def submit(
    request: Request,
    services: Services,
    jobs: JobQueue,
    kind: JobKind,
    params: BaseModel,
    idempotency_key: str | None,
    wait: float,
) -> Response:
    """Queue a job of `kind` for this request's uploads (see the module docstring)."""
    entry = kind.entry(services.models, params)  # 503 (404, 422) now, not a failed job
    request.state.model = entry.name  # for the metrics
    pipeline = services.pipeline
    limits = replace(pipeline.limits, max_bytes=pipeline.max_bytes(kind.media))
    images = await read_uploads(
        request, limits, kind.inputs, timeout=services.settings.body_timeout
    )
    # Within the decode budget: pixels in flight across requests stay bounded (a video's
    # check decodes one frame, of at most FER_MAX_VIDEO_PIXELS).
    video = pipeline.video.max_pixels * len(images)
    budget = services.budget
    hold = budget.reserve(lambda: video) if kind.media == "video" else budget.hold(images.values())
    async with hold:
        decoded = await asyncio.to_thread(pipeline.prepare, kind.media, images)
    record, created = await jobs.submit(kind.name, images, params, idempotency_key, decoded)
    if wait > 0 and not record.finished:
        record = await jobs.wait(record.id, wait) or record
    if wait > 0 and record.status == "succeeded":
        return await result_response(request, jobs, record)
    return job_accepted(request, record, created)
