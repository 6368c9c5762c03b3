"""A Python client of the fer-service REST API, sync (`Client`) and async (`AsyncClient`).

```python
from service.client import Client

with Client("http://127.0.0.1:8000") as fer:
    for face in fer.classify("photo.jpg").faces:
        print(face.expression, face.box)
    png = fer.transfer("me.jpg", "smile.jpg", timeout=60)  # queue the job, wait, fetch
```

Answers are the API's own pydantic models (`service.schemas`). An error answer
(`application/problem+json`) is raised as a `ServiceError` subclass carrying the
`Problem`; a job that fails raises `JobFailedError`, one that does not finish in time
`JobTimeoutError`. A `503` (or `429`) with `Retry-After` is retried after that many
seconds, `retries` times. `embedded()` is an `AsyncClient` on an in-process gateway: no
server, the same API (what the `fer-service classify` command uses by default).
"""

from __future__ import annotations

import asyncio
import email.utils
import mimetypes
import time
import uuid
from collections.abc import AsyncIterator, Callable, Generator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import httpx
from pydantic import BaseModel, ValidationError

from service.problems import TYPE_PREFIX
from service.schemas import (
    ClassifyResponse,
    Health,
    JobResult,
    JobStatus,
    ModelInfo,
    ModelList,
    Problem,
    Readiness,
)

if TYPE_CHECKING:
    from service.settings import Settings

DEFAULT_URL = "http://127.0.0.1:8000"

#: An image to upload: its bytes, or the path of its file.
ImageSource = bytes | str | Path

#: Called with the job's status each time a wait polls it.
JobCallback = Callable[[JobStatus], None]

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

#: Seconds between two polls of a job.
JOB_POLL_INTERVAL = 0.5


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


# -- requests, shared by both clients -------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One API request, built once and sent (again, when retried) by either client."""

    method: str
    path: str
    params: dict[str, Any] = field(default_factory=dict)
    files: dict[str, tuple[str, bytes, str]] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    #: Statuses that are answers rather than errors.
    ok: tuple[int, ...] = (200,)


def upload(source: ImageSource, name: str = "image") -> tuple[str, bytes, str]:
    """A multipart file `(filename, bytes, content type)` from bytes or a path."""
    if isinstance(source, bytes):
        return (name, source, "application/octet-stream")
    path = Path(source)
    kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return (path.name, path.read_bytes(), kind)


def classify_call(
    image: ImageSource, model: str | None, max_faces: int | None, neutral: bool
) -> Call:
    """`POST /classify` of one image."""
    params: dict[str, Any] = {}
    if model:
        params["model"] = model
    if max_faces is not None:
        params["max_faces"] = max_faces
    if neutral:
        params["neutral"] = "true"
    return Call("POST", "/classify", params, files={"image": upload(image)})


def job_call(path: str, files: dict[str, ImageSource], params: dict[str, Any]) -> Call:
    """A `POST` that queues a job (`/transfer`, `/frontalize`). It carries a fresh
    `Idempotency-Key`, so that a retried POST never queues the job twice."""
    uploads = {name: upload(source, name) for name, source in files.items()}
    headers = {"Idempotency-Key": uuid.uuid4().hex}
    return Call("POST", path, params, files=uploads, headers=headers, ok=(202,))


def result_call(job_id: str, as_json: bool = False) -> Call:
    """`GET /jobs/{id}/result`, the PNG or (`as_json`) its description."""
    headers = {"Accept": "application/json" if as_json else "image/png"}
    return Call("GET", f"/jobs/{job_id}/result", headers=headers)


#: Readiness: not ready (503) is an answer, not an error.
READYZ = Call("GET", "/readyz", ok=(200, 503))


def parse(response: httpx.Response, model: type[M]) -> M:
    """The response body as `model`."""
    return model.model_validate_json(response.content)


def finished(job: JobStatus) -> bool:
    """Whether a job is done; raises `JobFailedError` when it failed."""
    if job.status == "failed":
        raise JobFailedError(job)
    return job.status == "succeeded"


@dataclass(frozen=True)
class Sleep:
    """A pause a flow asks for (before a retry, between two polls of a job)."""

    seconds: float


#: An API operation written once for both clients, without I/O: it yields the requests to
#: send (the client answers each with its response) and the pauses to take (answered with
#: None), and returns the operation's result. `Client` runs flows with blocking calls,
#: `AsyncClient` with awaited ones.
Flow = Generator[Call | Sleep, httpx.Response | None, T]


class Flows:
    """The flows of the API's operations, with the retry policy: a 503 or 429 with
    `Retry-After` is sent again after that many seconds (at most `max_wait`), `retries`
    times."""

    def __init__(self, retries: int, max_wait: float) -> None:
        self.retries = retries
        self.max_wait = max_wait

    def retry_delay(self, response: httpx.Response, attempt: int) -> float | None:
        """Seconds to wait before sending again, or None to stop here."""
        if response.status_code not in (429, 503) or attempt >= self.retries:
            return None
        seconds = retry_after_seconds(response)
        return None if seconds is None else min(seconds, self.max_wait)

    def fetch(self, call: Call) -> Flow[httpx.Response]:
        """Send `call` (again while the server asks to); its response, or its error raised."""
        attempt = 0
        while True:
            response = yield call
            assert response is not None
            if response.status_code in call.ok:
                return response
            delay = self.retry_delay(response, attempt)
            if delay is None:
                raise error_for(response)
            attempt += 1
            yield Sleep(delay)

    def fetch_as(self, call: Call, model: type[M]) -> Flow[M]:
        """`fetch`, the body read as `model`."""
        return parse((yield from self.fetch(call)), model)

    def wait(
        self, job_id: str, timeout: float, interval: float, on_update: JobCallback | None
    ) -> Flow[JobStatus]:
        """Poll a job every `interval` s until it succeeds (its status), fails
        (`JobFailedError`) or `timeout` s pass (`JobTimeoutError`)."""
        deadline = time.monotonic() + timeout
        while True:
            job = yield from self.fetch_as(Call("GET", f"/jobs/{job_id}"), JobStatus)
            if on_update:
                on_update(job)
            if finished(job):
                return job
            if time.monotonic() + interval > deadline:
                raise JobTimeoutError(job, timeout)
            yield Sleep(interval)

    def job_image(self, submit: Call, timeout: float, on_update: JobCallback | None) -> Flow[bytes]:
        """Queue a job, wait for it and fetch its PNG."""
        job = yield from self.fetch_as(submit, JobStatus)
        yield from self.wait(job.id, timeout, JOB_POLL_INTERVAL, on_update)
        return (yield from self.fetch(result_call(job.id))).content


def transfer_call(
    face: ImageSource, expression: ImageSource, face_index: int, expression_index: int
) -> Call:
    """`POST /transfer` of two photos."""
    params = {"face_index": face_index, "expression_index": expression_index}
    return job_call("/transfer", {"face": face, "expression": expression}, params)


def frontalize_call(face: ImageSource, face_index: int) -> Call:
    """`POST /frontalize` of one photo."""
    return job_call("/frontalize", {"face": face}, {"face_index": face_index})


def _request_args(call: Call) -> dict[str, Any]:
    return {"params": call.params, "files": call.files, "headers": call.headers}


# -- the clients ----------------------------------------------------------------------------


class Client:
    """A synchronous client of a fer-service gateway at `url`.

    `retries` and `max_retry_wait` govern retries on 503/429 with `Retry-After`;
    `timeout` is httpx's per-request timeout in seconds. `transport` replaces httpx's
    network transport (e.g. one with its own connection retries).
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        timeout: float = 60.0,
        retries: int = 3,
        max_retry_wait: float = 30.0,
        headers: dict[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.http = httpx.Client(
            base_url=url, timeout=timeout, headers=headers, transport=transport
        )
        self.flows = Flows(retries, max_retry_wait)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections."""
        self.http.close()

    def run(self, flow: Flow[T]) -> T:
        """Run a flow: send its requests, take its pauses; its result."""
        reply: httpx.Response | None = None
        try:
            while True:
                step = flow.send(reply)
                if isinstance(step, Sleep):
                    time.sleep(step.seconds)
                    reply = None
                else:
                    reply = self.http.request(step.method, step.path, **_request_args(step))
        except StopIteration as done:
            return cast(T, done.value)

    def send(self, call: Call) -> httpx.Response:
        """Send `call`, retrying while the server asks to; raises on an error answer."""
        return self.run(self.flows.fetch(call))

    def classify(
        self,
        image: ImageSource,
        *,
        model: str | None = None,
        max_faces: int | None = None,
        neutral: bool = False,
    ) -> ClassifyResponse:
        """Every face of `image` with its expression (`POST /classify`)."""
        call = classify_call(image, model, max_faces, neutral)
        return self.run(self.flows.fetch_as(call, ClassifyResponse))

    def models(self) -> ModelList:
        """The models of the model store (`GET /models`)."""
        return self.run(self.flows.fetch_as(Call("GET", "/models"), ModelList))

    def model(self, name: str) -> ModelInfo:
        """One model (`GET /models/{name}`)."""
        return self.run(self.flows.fetch_as(Call("GET", f"/models/{name}"), ModelInfo))

    def health(self) -> Health:
        """Liveness (`GET /healthz`)."""
        return self.run(self.flows.fetch_as(Call("GET", "/healthz"), Health))

    def ready(self) -> Readiness:
        """Readiness with every check (`GET /readyz`; not ready is an answer too)."""
        return self.run(self.flows.fetch_as(READYZ, Readiness))

    def submit_transfer(
        self,
        face: ImageSource,
        expression: ImageSource,
        *,
        face_index: int = 0,
        expression_index: int = 0,
    ) -> JobStatus:
        """Queue an expression transfer (`POST /transfer`); returns the job."""
        call = transfer_call(face, expression, face_index, expression_index)
        return self.run(self.flows.fetch_as(call, JobStatus))

    def submit_frontalize(self, face: ImageSource, *, face_index: int = 0) -> JobStatus:
        """Queue a frontalization (`POST /frontalize`); returns the job."""
        return self.run(self.flows.fetch_as(frontalize_call(face, face_index), JobStatus))

    def job(self, job_id: str) -> JobStatus:
        """A job's status (`GET /jobs/{id}`)."""
        return self.run(self.flows.fetch_as(Call("GET", f"/jobs/{job_id}"), JobStatus))

    def wait(
        self,
        job_id: str,
        *,
        timeout: float = 120.0,
        interval: float = JOB_POLL_INTERVAL,
        on_update: JobCallback | None = None,
    ) -> JobStatus:
        """Poll a job every `interval` s until it succeeds (its status), fails
        (`JobFailedError`) or `timeout` s pass (`JobTimeoutError`)."""
        return self.run(self.flows.wait(job_id, timeout, interval, on_update))

    def result(self, job_id: str) -> bytes:
        """A succeeded job's PNG (`GET /jobs/{id}/result`)."""
        return self.send(result_call(job_id)).content

    def result_info(self, job_id: str) -> JobResult:
        """A succeeded job's description: model, size, the faces used."""
        return self.run(self.flows.fetch_as(result_call(job_id, as_json=True), JobResult))

    def delete(self, job_id: str) -> None:
        """Forget a job now (`DELETE /jobs/{id}`)."""
        self.send(Call("DELETE", f"/jobs/{job_id}", ok=(204,)))

    def transfer(
        self,
        face: ImageSource,
        expression: ImageSource,
        *,
        face_index: int = 0,
        expression_index: int = 0,
        timeout: float = 120.0,
        on_update: JobCallback | None = None,
    ) -> bytes:
        """The face of `face` wearing the expression of `expression`, as a PNG: queue the
        job, wait for it (at most `timeout` s) and fetch its result."""
        call = transfer_call(face, expression, face_index, expression_index)
        return self.run(self.flows.job_image(call, timeout, on_update))

    def frontalize(
        self,
        face: ImageSource,
        *,
        face_index: int = 0,
        timeout: float = 120.0,
        on_update: JobCallback | None = None,
    ) -> bytes:
        """The frontal view of a face of `face`, as a PNG (queue, wait, fetch)."""
        call = frontalize_call(face, face_index)
        return self.run(self.flows.job_image(call, timeout, on_update))


class AsyncClient:
    """The asynchronous twin of `Client`: the same methods, awaited."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        timeout: float = 60.0,
        retries: int = 3,
        max_retry_wait: float = 30.0,
        headers: dict[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.http = httpx.AsyncClient(
            base_url=url, timeout=timeout, headers=headers, transport=transport
        )
        self.flows = Flows(retries, max_retry_wait)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connections."""
        await self.http.aclose()

    async def run(self, flow: Flow[T]) -> T:
        """Run a flow: send its requests, take its pauses; its result."""
        reply: httpx.Response | None = None
        try:
            while True:
                step = flow.send(reply)
                if isinstance(step, Sleep):
                    await asyncio.sleep(step.seconds)
                    reply = None
                else:
                    args = _request_args(step)
                    reply = await self.http.request(step.method, step.path, **args)
        except StopIteration as done:
            return cast(T, done.value)

    async def send(self, call: Call) -> httpx.Response:
        """Send `call`, retrying while the server asks to; raises on an error answer."""
        return await self.run(self.flows.fetch(call))

    async def classify(
        self,
        image: ImageSource,
        *,
        model: str | None = None,
        max_faces: int | None = None,
        neutral: bool = False,
    ) -> ClassifyResponse:
        """Every face of `image` with its expression (`POST /classify`)."""
        call = classify_call(image, model, max_faces, neutral)
        return await self.run(self.flows.fetch_as(call, ClassifyResponse))

    async def models(self) -> ModelList:
        """The models of the model store (`GET /models`)."""
        return await self.run(self.flows.fetch_as(Call("GET", "/models"), ModelList))

    async def model(self, name: str) -> ModelInfo:
        """One model (`GET /models/{name}`)."""
        return await self.run(self.flows.fetch_as(Call("GET", f"/models/{name}"), ModelInfo))

    async def health(self) -> Health:
        """Liveness (`GET /healthz`)."""
        return await self.run(self.flows.fetch_as(Call("GET", "/healthz"), Health))

    async def ready(self) -> Readiness:
        """Readiness with every check (`GET /readyz`; not ready is an answer too)."""
        return await self.run(self.flows.fetch_as(READYZ, Readiness))

    async def submit_transfer(
        self,
        face: ImageSource,
        expression: ImageSource,
        *,
        face_index: int = 0,
        expression_index: int = 0,
    ) -> JobStatus:
        """Queue an expression transfer (`POST /transfer`); returns the job."""
        call = transfer_call(face, expression, face_index, expression_index)
        return await self.run(self.flows.fetch_as(call, JobStatus))

    async def submit_frontalize(self, face: ImageSource, *, face_index: int = 0) -> JobStatus:
        """Queue a frontalization (`POST /frontalize`); returns the job."""
        return await self.run(self.flows.fetch_as(frontalize_call(face, face_index), JobStatus))

    async def job(self, job_id: str) -> JobStatus:
        """A job's status (`GET /jobs/{id}`)."""
        return await self.run(self.flows.fetch_as(Call("GET", f"/jobs/{job_id}"), JobStatus))

    async def wait(
        self,
        job_id: str,
        *,
        timeout: float = 120.0,
        interval: float = JOB_POLL_INTERVAL,
        on_update: JobCallback | None = None,
    ) -> JobStatus:
        """Poll a job every `interval` s until it succeeds (its status), fails
        (`JobFailedError`) or `timeout` s pass (`JobTimeoutError`)."""
        return await self.run(self.flows.wait(job_id, timeout, interval, on_update))

    async def result(self, job_id: str) -> bytes:
        """A succeeded job's PNG (`GET /jobs/{id}/result`)."""
        return (await self.send(result_call(job_id))).content

    async def result_info(self, job_id: str) -> JobResult:
        """A succeeded job's description: model, size, the faces used."""
        return await self.run(self.flows.fetch_as(result_call(job_id, as_json=True), JobResult))

    async def delete(self, job_id: str) -> None:
        """Forget a job now (`DELETE /jobs/{id}`)."""
        await self.send(Call("DELETE", f"/jobs/{job_id}", ok=(204,)))

    async def transfer(
        self,
        face: ImageSource,
        expression: ImageSource,
        *,
        face_index: int = 0,
        expression_index: int = 0,
        timeout: float = 120.0,
        on_update: JobCallback | None = None,
    ) -> bytes:
        """The face of `face` wearing the expression of `expression`, as a PNG: queue the
        job, wait for it (at most `timeout` s) and fetch its result."""
        call = transfer_call(face, expression, face_index, expression_index)
        return await self.run(self.flows.job_image(call, timeout, on_update))

    async def frontalize(
        self,
        face: ImageSource,
        *,
        face_index: int = 0,
        timeout: float = 120.0,
        on_update: JobCallback | None = None,
    ) -> bytes:
        """The frontal view of a face of `face`, as a PNG (queue, wait, fetch)."""
        call = frontalize_call(face, face_index)
        return await self.run(self.flows.job_image(call, timeout, on_update))


@asynccontextmanager
async def embedded(settings: Settings | None = None) -> AsyncIterator[AsyncClient]:
    """An `AsyncClient` on a gateway app started in this process (models loaded, jobs in
    its own pool) instead of a server: the embedded mode without HTTP. `settings`
    default to the `FER_*` environment."""
    from service.app import create_app  # the whole serving stack: only when asked for

    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with AsyncClient("http://fer-service.embedded", transport=transport) as client:
            yield client
