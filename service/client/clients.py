"""The two clients of the fer-service API: `Client` (blocking) and `AsyncClient` (awaited),
running the same request flows (`service/client/calls.py`), and `embedded()`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, cast

import httpx

from service.client.calls import (
    JOB_POLL_INTERVAL,
    READYZ,
    Call,
    Flow,
    Flows,
    ImageSource,
    JobCallback,
    Sleep,
    T,
    classify_call,
    frontalize_call,
    request_args,
    result_call,
    transfer_call,
    video_call,
    video_flow,
)
from service.schemas import (
    ClassifyResponse,
    Health,
    JobResult,
    JobStatus,
    ModelInfo,
    ModelList,
    Readiness,
)

if TYPE_CHECKING:
    from service.settings import Settings
    from service.video_schemas import VideoResult

DEFAULT_URL = "http://127.0.0.1:8000"


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
                    reply = self.http.request(step.method, step.path, **request_args(step))
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
        frontalize: bool = False,
        frontalize_min_yaw: float | None = None,
    ) -> ClassifyResponse:
        """Every face of `image` with its expression (`POST /classify`); `frontalize`: the
        turned faces' frontal views (|yaw| at least `frontalize_min_yaw`)."""
        call = classify_call(image, model, max_faces, neutral, frontalize, frontalize_min_yaw)
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

    def classify_video(
        self,
        clip: ImageSource,
        *,
        fps: float = 5.0,
        model: str | None = None,
        max_faces: int = 5,
        timeout: float = 600.0,
        on_update: JobCallback | None = None,
    ) -> VideoResult:
        """The face tracks of a clip and their expressions (queue, wait, fetch)."""
        call = video_call(clip, fps, model, max_faces)
        return cast("VideoResult", self.run(video_flow(self.flows, call, timeout, on_update)))


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
                    args = request_args(step)
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
        frontalize: bool = False,
        frontalize_min_yaw: float | None = None,
    ) -> ClassifyResponse:
        """Every face of `image` with its expression (`POST /classify`); `frontalize`: the
        turned faces' frontal views (|yaw| at least `frontalize_min_yaw`)."""
        call = classify_call(image, model, max_faces, neutral, frontalize, frontalize_min_yaw)
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

    async def classify_video(
        self,
        clip: ImageSource,
        *,
        fps: float = 5.0,
        model: str | None = None,
        max_faces: int = 5,
        timeout: float = 600.0,
        on_update: JobCallback | None = None,
    ) -> VideoResult:
        """The face tracks of a clip and their expressions (queue, wait, fetch)."""
        call = video_call(clip, fps, model, max_faces)
        flow = video_flow(self.flows, call, timeout, on_update)
        return cast("VideoResult", await self.run(flow))


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
