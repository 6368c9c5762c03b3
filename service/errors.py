"""Errors as RFC 9457 problem details (`application/problem+json`).

Every error the gateway returns has a stable `type` (a URN listed in `PROBLEMS` and in
docs/api.md), a `title` that belongs to the type, the HTTP `status` and a human `detail`.
Code raises `ProblemError(<slug>, detail)`; the handlers below turn it, FastAPI's
validation errors, routing errors and unexpected exceptions into such responses.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.schemas import Problem

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
TYPE_PREFIX = "urn:fer-service:problem:"


@dataclass(frozen=True)
class ProblemKind:
    """A kind of error: its slug (the end of `type`), status, title and an example detail."""

    slug: str
    status: int
    title: str
    example: str

    @property
    def type(self) -> str:
        return TYPE_PREFIX + self.slug


#: Every problem type the gateway emits, by slug.
PROBLEMS: dict[str, ProblemKind] = {
    p.slug: p
    for p in (
        ProblemKind(
            "missing-image",
            400,
            "No image in the request",
            "send the image as the multipart/form-data field 'image' (got fields: file)",
        ),
        ProblemKind("not-found", 404, "Not found", "no route GET /nowhere"),
        ProblemKind("unknown-model", 404, "No such model", "no model 'resnet'; known: compact"),
        ProblemKind("method-not-allowed", 405, "Method not allowed", "Method Not Allowed"),
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
        # -- queued jobs (/transfer, /jobs) -----------------------------------------------
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
            "cannot reach Redis at redis://redis:6379/0: Connection refused",
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
            "cannot connect to TorchServe at http://127.0.0.1:8080/",
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
    """An error for the client; `slug` is a key of `PROBLEMS`."""

    def __init__(
        self,
        slug: str,
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


def problem_response(
    slug: str,
    detail: str,
    *,
    instance: str | None = None,
    retry_after: int | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    """A problem+json response of kind `slug`."""
    kind = PROBLEMS[slug]
    body = Problem(
        type=kind.type, title=kind.title, status=kind.status, detail=detail, instance=instance
    ).model_dump(exclude_none=True)
    body.update(extra or {})
    headers = {"Retry-After": str(retry_after)} if retry_after else None
    return JSONResponse(body, status_code=kind.status, headers=headers, media_type=PROBLEM_JSON)


async def _on_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ProblemError)
    if exc.status >= 500:
        log.warning("%s %s: %s: %s", request.method, request.url.path, exc.kind.slug, exc)
    return problem_response(
        exc.kind.slug,
        exc.detail,
        instance=request.url.path,
        retry_after=exc.retry_after,
        extra=exc.extra,
    )


async def _on_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type")}
        for e in exc.errors()
    ]
    detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
    return problem_response(
        "invalid-request", detail, instance=request.url.path, extra={"errors": errors}
    )


async def _on_http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    slug = {404: "not-found", 405: "method-not-allowed", 413: "payload-too-large"}.get(
        exc.status_code
    )
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    if slug is not None:
        response = problem_response(slug, detail, instance=request.url.path)
    else:  # a status this app has no type for: RFC 9457's generic problem
        body = Problem(
            type="about:blank",
            title=HTTPStatus(exc.status_code).phrase,
            status=exc.status_code,
            detail=detail,
            instance=request.url.path,
        ).model_dump()
        response = JSONResponse(body, status_code=exc.status_code, media_type=PROBLEM_JSON)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("%s %s failed", request.method, request.url.path, exc_info=exc)
    return problem_response(
        "internal-error", "an unexpected error occurred", instance=request.url.path
    )


def install_error_handlers(app: FastAPI) -> None:
    """Make every error response of `app` a problem+json document."""
    app.add_exception_handler(ProblemError, _on_problem)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(Exception, _on_unexpected)


def document_problems(spec: dict[str, Any]) -> dict[str, Any]:
    """Fix up FastAPI's OpenAPI document so that it says what the handlers above do.

    Error responses carry the `Problem` schema under `application/problem+json` only, and
    FastAPI's default 422 (`HTTPValidationError`, which this app never sends) becomes the
    `invalid-request` problem.
    """
    ref = {"$ref": "#/components/schemas/Problem"}
    invalid = problem_responses("invalid-request")[422]
    for operations in spec.get("paths", {}).values():
        for operation in operations.values():
            for status, response in operation.get("responses", {}).items():
                content = response.get("content", {})
                if status == "422" and "HTTPValidationError" in str(content):
                    response["description"] = invalid["description"]
                    content.clear()
                    content[PROBLEM_JSON] = dict(invalid["content"][PROBLEM_JSON])
                if PROBLEM_JSON in content:
                    content.pop("application/json", None)
                    content[PROBLEM_JSON] = {"schema": dict(ref), **content[PROBLEM_JSON]}
    schemas = spec.get("components", {}).get("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    return spec


def problem_responses(*slugs: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries documenting these problem kinds, grouped by status."""
    by_status: dict[int, list[ProblemKind]] = {}
    for slug in slugs:
        by_status.setdefault(PROBLEMS[slug].status, []).append(PROBLEMS[slug])
    out: dict[int | str, dict[str, Any]] = {}
    for status, kinds in sorted(by_status.items()):
        examples = {
            k.slug: {
                "summary": k.title,
                "value": {
                    "type": k.type,
                    "title": k.title,
                    "status": k.status,
                    "detail": k.example,
                },
            }
            for k in kinds
        }
        out[status] = {
            "description": "; ".join(f"`{k.slug}`: {k.title}" for k in kinds),
            "model": Problem,
            "content": {PROBLEM_JSON: {"examples": examples}},
        }
    return out
