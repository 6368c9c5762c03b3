"""The requests of the fer-service API, written once for both clients: each operation as
an I/O-free flow that yields the calls to send and the pauses to take."""

from __future__ import annotations

import mimetypes
import time
import uuid
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from service.client.errors import JobFailedError, JobTimeoutError, error_for, retry_after_seconds
from service.schemas import (
    JobStatus,
)

#: An image to upload: its bytes, or the path of its file.
ImageSource = bytes | str | Path

#: Called with the job's status each time a wait polls it.
JobCallback = Callable[[JobStatus], None]

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

#: Seconds between two polls of a job.
JOB_POLL_INTERVAL = 0.5


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
    image: ImageSource,
    model: str | None,
    max_faces: int | None,
    neutral: bool,
    frontalize: bool = False,
    frontalize_min_yaw: float | None = None,
) -> Call:
    """`POST /classify` of one image."""
    params: dict[str, Any] = {}
    if model:
        params["model"] = model
    if max_faces is not None:
        params["max_faces"] = max_faces
    if neutral:
        params["neutral"] = "true"
    if frontalize:
        params["frontalize"] = "true"
        if frontalize_min_yaw is not None:
            params["frontalize_min_yaw"] = frontalize_min_yaw
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


def video_call(clip: ImageSource, fps: float, model: str | None, max_faces: int) -> Call:
    """`POST /classify/video` of one clip."""
    params: dict[str, Any] = {"fps": fps, "max_faces": max_faces}
    if model:
        params["model"] = model
    return job_call("/classify/video", {"video": clip}, params)


def video_flow(
    flows: Flows, call: Call, timeout: float, on_update: JobCallback | None
) -> Flow[Any]:
    """Queue a video job, wait for it and fetch its tracks (a `VideoResult`)."""
    from service.video_schemas import VideoResult

    job = yield from flows.fetch_as(call, JobStatus)
    yield from flows.wait(job.id, timeout, JOB_POLL_INTERVAL, on_update)
    return (yield from flows.fetch_as(result_call(job.id, as_json=True), VideoResult))


def request_args(call: Call) -> dict[str, Any]:
    return {"params": call.params, "files": call.files, "headers": call.headers}
