"""The FastAPI side of the problem vocabulary (service/problems.py): the exception handlers
that make every error response an `application/problem+json` document, and the OpenAPI
entries that describe them.

`install_error_handlers(app)` turns `ProblemError`, FastAPI's validation errors, routing
errors and unexpected exceptions into such responses.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match

from service.problems import (
    PROBLEM_JSON,
    PROBLEMS,
    BackendError,
    ProblemError,
    ProblemKind,
    ProblemSlug,
)
from service.schemas import Problem

log = logging.getLogger(__name__)

HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def problem_response(
    slug: ProblemSlug,
    detail: str,
    *,
    instance: str | None = None,
    retry_after: int | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    """A problem+json response of kind `slug`."""
    kind = PROBLEMS[slug]
    body = kind.document(detail, instance).model_dump(exclude_none=True)
    body.update(extra or {})
    headers = {"Retry-After": str(retry_after)} if retry_after else None
    return JSONResponse(body, status_code=kind.status, headers=headers, media_type=PROBLEM_JSON)


async def _on_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ProblemError)
    if exc.status >= 500:
        log.warning("%s %s: %s: %s", request.method, request.url.path, exc.kind.slug, exc)
    metrics = getattr(request.app.state, "metrics", None)
    if isinstance(exc, BackendError) and metrics is not None:
        metrics.backend_errors.labels(exc.kind.slug).inc()
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
    slugs: dict[int, ProblemSlug] = {
        404: "not-found",
        405: "method-not-allowed",
        413: "payload-too-large",
    }
    slug = slugs.get(exc.status_code)
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
    if exc.status_code == 405:
        response.headers["Allow"] = ", ".join(allowed_methods(request))
    return response


def allowed_methods(request: Request) -> list[str]:
    """Every method some route accepts at the request's path (Starlette's 405 names only
    the methods of the first route that matched the path)."""
    # Asked of the routes method by method: included routers do not expose their methods.
    routes = request.app.router.routes
    return [
        method
        for method in HTTP_METHODS
        if any(r.matches({**request.scope, "method": method})[0] == Match.FULL for r in routes)
    ]


async def _on_disconnect(request: Request, exc: Exception) -> Response:
    # Nobody is left to answer; an everyday event, so no traceback and no error.
    log.info("%s %s: the client disconnected while sending", request.method, request.url.path)
    return Response(status_code=499)


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
    app.add_exception_handler(ClientDisconnect, _on_disconnect)
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


def problem_responses(*slugs: ProblemSlug) -> dict[int | str, dict[str, Any]]:
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
