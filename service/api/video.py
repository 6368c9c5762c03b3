"""`POST /classify/video`: queue the face tracks of a clip and their expressions."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from service.api.deps import JobsDep, ServicesDep
from service.api.errors import problem_responses
from service.api.jobs import VIDEO_RESULT_RESPONSE, WaitQuery
from service.api.submit import ACCEPTED, IdempotencyKey, multipart_body, submit
from service.jobs.video import VIDEO, VideoParams
from service.problems import ProblemError
from service.schemas import JobStatus

router = APIRouter(tags=["video"])

#: The answers of the route: those of every job-creating route, the video's own problems
#: and, with `wait`, the video result.
VIDEO_ACCEPTED: dict[int | str, dict[str, Any]] = {
    **ACCEPTED,
    **VIDEO_RESULT_RESPONSE,
    **problem_responses(
        "missing-image",
        "payload-too-large",
        "video-too-large",
        "video-too-long",
        "unsupported-media-type",
        "unsupported-video",
        "invalid-video",
        "invalid-request",
        "unknown-model",
        "not-a-classifier",
        "model-not-ready",
        "queue-unavailable",
        "queue-full",
        "idempotency-key-reused",
        "request-timeout",
        "server-busy",
    ),
}


@router.post(
    "/classify/video",
    status_code=202,
    response_model=JobStatus,
    summary="Follow every face of a clip and classify its expressions (queued job)",
    openapi_extra=multipart_body(
        "One clip as a multipart/form-data file `video`: MP4, MOV, WebM (Matroska) or AVI, "
        "any codec FFmpeg decodes (H.264, H.265, VP8, VP9, AV1, MPEG-4, MJPEG, ...).",
        VIDEO,
    ),
    responses=VIDEO_ACCEPTED,
)
async def classify_video(
    request: Request,
    services: ServicesDep,
    jobs: JobsDep,
    fps: Annotated[
        float,
        Query(gt=0, description="frames sampled per second of video (at most FER_VIDEO_MAX_FPS)"),
    ] = 5.0,
    model: Annotated[
        str | None,
        Query(description="the frame classifier (see `GET /models`); default: the default"),
    ] = None,
    max_faces: Annotated[
        int,
        Query(ge=1, description="faces followed per frame, the largest (at most FER_MAX_FACES)"),
    ] = 5,
    wait: WaitQuery = 0.0,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Sample the clip `fps` times a second, find the faces of every sampled frame, link
    them into tracks (box overlap, landmark distance) and classify each face with the
    frame classifier (`model`); each track gets one label from the `sequence` model (a
    GRU over the frame classifier's features) when the model store has one, else the mean
    of its frames' probabilities (`label_source` says which).

    Queued like `/transfer`: `202` with the job; `GET /jobs/{id}` shows its `progress`
    (sampled frames done of the expected total); the result (`GET /jobs/{id}/result`) is
    JSON, or with `format=png` a timeline picture of each track's expressions. With
    `wait=N` the answer is the JSON result itself if the job succeeds within N seconds.
    The clip is checked before it is queued: 415 `unsupported-video` (not MP4, MOV, WebM
    or AVI), 422 `invalid-video` (damaged, truncated, no video stream), 413
    `video-too-large` (pixels a frame), `video-too-long`, `payload-too-large`.
    """
    settings = services.settings
    if fps > settings.video_max_fps:
        raise ProblemError(
            "invalid-request", f"query.fps: at most {settings.video_max_fps:g} frames a second"
        )
    if max_faces > settings.max_faces:
        raise ProblemError("invalid-request", f"query.max_faces: at most {settings.max_faces}")
    params = VideoParams(fps=fps, model=model, max_faces=max_faces)
    return await submit(request, services, jobs, VIDEO, params, idempotency_key, wait)
