"""The problem vocabulary: every error the service reports, as RFC 9457 problem details.

Every error has a stable `type` (a URN made of `TYPE_PREFIX` and a slug listed in
`PROBLEMS` and in docs/api.md), a `title` that belongs to the type, the HTTP `status` and
a human `detail`. Code raises `ProblemError(<slug>, detail)`, or one of the backend errors
below; the slug is a `ProblemSlug`, so mypy refuses a misspelt one.

Framework-free on purpose: the image decoder, the inference backends and the Celery worker
raise these without importing FastAPI. The FastAPI handlers that turn them into
`application/problem+json` responses are in service/api/errors.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from service.schemas import Problem

PROBLEM_JSON = "application/problem+json"
TYPE_PREFIX = "urn:fer-service:problem:"

#: The slug of every problem type (the end of its `type` URN).
ProblemSlug = Literal[
    "missing-image",
    "unauthorized",
    "forbidden",
    "not-found",
    "unknown-model",
    "method-not-allowed",
    "request-timeout",
    "payload-too-large",
    "image-too-large",
    "unsupported-media-type",
    "unsupported-image",
    "invalid-image",
    "video-too-large",
    "video-too-long",
    "unsupported-video",
    "invalid-video",
    "invalid-request",
    "not-a-classifier",
    "idempotency-key-reused",
    "rate-limited",
    "server-busy",
    "job-not-found",
    "job-not-finished",
    "job-failed",
    "no-face",
    "queue-unavailable",
    "queue-full",
    "job-timeout",
    "internal-error",
    "backend-error",
    "backend-unavailable",
    "model-not-ready",
    "backend-timeout",
]


@dataclass(frozen=True)
class ProblemKind:
    """A kind of error: its slug (the end of `type`), status, title and an example detail."""

    slug: ProblemSlug
    status: int
    title: str
    example: str

    @property
    def type(self) -> str:
        return TYPE_PREFIX + self.slug

    def document(self, detail: str, instance: str | None = None) -> Problem:
        """The problem document of this kind with `detail` about `instance`."""
        return Problem(
            type=self.type, title=self.title, status=self.status, detail=detail, instance=instance
        )


#: Every problem type the gateway emits, by slug.
PROBLEMS: dict[ProblemSlug, ProblemKind] = {
    p.slug: p
    for p in (
        ProblemKind(
            "missing-image",
            400,
            "No image in the request",
            "send the image as the multipart/form-data field 'image' (got fields: file)",
        ),
        ProblemKind(
            "unauthorized",
            401,
            "An API key is required",
            "send an API key as `Authorization: Bearer <key>` or `X-API-Key: <key>`",
        ),
        ProblemKind("forbidden", 403, "The API key is not valid", "this API key is not known"),
        ProblemKind("not-found", 404, "Not found", "no route GET /nowhere"),
        ProblemKind("unknown-model", 404, "No such model", "no model 'resnet'; known: compact"),
        ProblemKind("method-not-allowed", 405, "Method not allowed", "Method Not Allowed"),
        ProblemKind(
            "request-timeout",
            408,
            "The request body took too long",
            "the body did not arrive within 30 s",
        ),
        ProblemKind(
            "payload-too-large",
            413,
            "Request body too large",
            "the body exceeds 10485760 bytes",
        ),
        ProblemKind(
            "image-too-large",
            413,
            "Image has too many pixels",
            "the image is 10000x10000 = 100000000 pixels; the limit is 40000000",
        ),
        ProblemKind(
            "unsupported-media-type",
            415,
            "Unsupported request content type",
            "send multipart/form-data with a field 'image', or an image/* body "
            "(got application/json)",
        ),
        ProblemKind(
            "unsupported-image",
            415,
            "Not an image in a supported format",
            "not a JPEG, PNG, WebP, BMP, TIFF or GIF image",
        ),
        ProblemKind(
            "invalid-image",
            422,
            "The image cannot be decoded",
            "the JPEG image is damaged: image file is truncated",
        ),
        ProblemKind(
            "video-too-large",
            413,
            "Video frames have too many pixels",
            "the video is 3840x2160 = 8294400 pixels a frame; the limit is 2073600",
        ),
        ProblemKind(
            "video-too-long",
            413,
            "Video too long",
            "the video lasts 630.0 s; the limit is 300 s",
        ),
        ProblemKind(
            "unsupported-video",
            415,
            "Not a video in a supported format",
            "not an MP4, MOV, WebM (Matroska) or AVI video",
        ),
        ProblemKind(
            "invalid-video",
            422,
            "The video cannot be decoded",
            "the MP4/MOV video is damaged: Invalid data found when processing input",
        ),
        ProblemKind(
            "invalid-request",
            422,
            "Invalid request parameters",
            "query.max_faces: Input should be greater than or equal to 1",
        ),
        ProblemKind(
            "not-a-classifier",
            422,
            "The model does not classify expressions",
            "model 'tdgan' is a transfer model; classifiers: compact",
        ),
        ProblemKind(
            "rate-limited",
            429,
            "Too many requests",
            "more than 5 requests per second; retry in 1 s",
        ),
        ProblemKind(
            "server-busy",
            503,
            "The server is busy",
            "too many images are being decoded; retry in 5 s",
        ),
        # -- queued jobs (/transfer, /jobs) -----------------------------------------------
        ProblemKind(
            "idempotency-key-reused",
            422,
            "The Idempotency-Key was used for another request",
            "the Idempotency-Key '42' was used for a different request body",
        ),
        ProblemKind(
            "job-not-found",
            404,
            "No such job",
            "no job 'c0ffee'; it never existed, expired or was deleted",
        ),
        ProblemKind(
            "job-not-finished",
            409,
            "The job has not finished",
            "job 'c0ffee' is running; poll GET /jobs/c0ffee or add ?wait=30",
        ),
        ProblemKind(
            "job-failed",
            409,
            "The job failed",
            "job 'c0ffee' failed: the expression image has no face",
        ),
        ProblemKind(
            "no-face",
            422,
            "No such face in the image",
            "the expression image has 1 face; expression_index 2 is out of range",
        ),
        ProblemKind(
            "queue-unavailable",
            503,
            "The job queue is unavailable",
            "the job queue cannot be reached; retry later",
        ),
        ProblemKind(
            "queue-full",
            503,
            "The job queue is full",
            "64 jobs are queued or running; retry later",
        ),
        ProblemKind(
            "job-timeout",
            504,
            "The job took too long",
            "the job did not finish within 120 s",
        ),
        ProblemKind("internal-error", 500, "Internal server error", "an unexpected error occurred"),
        ProblemKind(
            "backend-error",
            502,
            "The inference backend failed",
            "TorchServe answered 500 for model 'compact'",
        ),
        ProblemKind(
            "backend-unavailable",
            503,
            "The inference backend is unavailable",
            "the inference backend cannot be reached",
        ),
        ProblemKind(
            "model-not-ready",
            503,
            "The model is not loaded yet",
            "model 'compact' has no ready worker",
        ),
        ProblemKind(
            "backend-timeout",
            504,
            "The inference backend timed out",
            "TorchServe did not answer within 30 s",
        ),
    )
}


class ProblemError(Exception):
    """An error for the client, of the problem kind `slug`."""

    def __init__(
        self,
        slug: ProblemSlug,
        detail: str,
        *,
        retry_after: int | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.kind = PROBLEMS[slug]
        self.detail = detail
        self.retry_after = retry_after
        self.extra = extra or {}

    @property
    def status(self) -> int:
        return self.kind.status


# -- inference backend errors ---------------------------------------------------------------


class BackendError(ProblemError):
    """The backend failed to answer (502 `backend-error`)."""

    slug: ProblemSlug = "backend-error"

    def __init__(self, detail: str, retry_after: int | None = None) -> None:
        super().__init__(self.slug, detail, retry_after=retry_after)


class BackendUnavailable(BackendError):
    """The backend cannot be reached or has no capacity now (503, with Retry-After)."""

    slug = "backend-unavailable"


class ModelNotReady(BackendError):
    """The model is not loaded (yet) in the backend (503, with Retry-After)."""

    slug = "model-not-ready"


class BackendTimeout(BackendError):
    """The backend did not answer in time (504)."""

    slug = "backend-timeout"
