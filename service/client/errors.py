"""Errors of the fer-service client: problem+json answers as typed exceptions, and the
`Retry-After` of a 503 or 429."""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import httpx
from pydantic import ValidationError

from service.problems import TYPE_PREFIX
from service.schemas import (
    JobStatus,
    Problem,
)

if TYPE_CHECKING:
    pass


# -- errors ---------------------------------------------------------------------------------


class ServiceError(Exception):
    """The service answered with an error: `problem` is its problem+json document."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(f"{problem.title}: {problem.detail}")
        self.problem = problem

    @property
    def status(self) -> int:
        """The HTTP status."""
        return self.problem.status

    @property
    def slug(self) -> str:
        """The stable part of the problem's `type` (e.g. `unknown-model`)."""
        return self.problem.type.removeprefix(TYPE_PREFIX)


class BadRequestError(ServiceError):
    """A 4xx: the request was refused (a bad image, an unknown parameter, ...)."""


class NotFoundError(BadRequestError):
    """A 404: no such model, job or route."""


class UnavailableError(ServiceError):
    """A 503 or 429 that persisted after the retries; `retry_after` is its last advice."""

    def __init__(self, problem: Problem, retry_after: float | None) -> None:
        super().__init__(problem)
        self.retry_after = retry_after


class ServerError(ServiceError):
    """Any other 5xx: the service or its backend failed."""


class JobFailedError(ServiceError):
    """A queued job failed; `problem` is the job's own error (e.g. `no-face`)."""

    def __init__(self, job: JobStatus) -> None:
        super().__init__(job.error or _problem("about:blank", "Job failed", 500, "no reason"))
        self.job = job


class JobTimeoutError(TimeoutError):
    """A job did not finish within the time the caller gave it; `job` is its last status."""

    def __init__(self, job: JobStatus, timeout: float) -> None:
        super().__init__(f"job {job.id} is still {job.status} after {timeout:g} s")
        self.job = job


def _problem(type_: str, title: str, status: int, detail: str) -> Problem:
    return Problem(type=type_, title=title, status=status, detail=detail, instance=None)


def retry_after_seconds(response: httpx.Response) -> float | None:
    """The response's `Retry-After` in seconds (a number or an HTTP date), or None."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def error_for(response: httpx.Response) -> ServiceError:
    """The typed exception of an error response (problem+json, or anything else)."""
    problem: Problem | None = None
    if "json" in response.headers.get("content-type", ""):
        try:
            problem = Problem.model_validate_json(response.content)
        except ValidationError:
            problem = None
    if problem is None:  # not the gateway's (a proxy's HTML page, say): keep what it said
        phrase = response.reason_phrase or "Error"
        problem = _problem("about:blank", phrase, response.status_code, response.text[:500])
    status = response.status_code
    if status in (429, 503):
        return UnavailableError(problem, retry_after_seconds(response))
    if status == 404:
        return NotFoundError(problem)
    if status < 500:
        return BadRequestError(problem)
    return ServerError(problem)
