"""What the routes share: the running services of the app, as `Annotated` dependencies."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from pydantic import BaseModel

from service.api.guard import Caller, get_caller
from service.catalog import ModelStore
from service.imaging import PixelBudget
from service.inference import InferenceBackend
from service.jobs.queues import JobQueue, QueueCheck
from service.jobs.records import JobRecord
from service.metrics import Metrics
from service.pipeline import Decoded, FacePipeline
from service.problems import BackendUnavailable, ProblemError
from service.settings import Settings


@dataclass
class Services:
    """Everything the lifespan of the app started."""

    settings: Settings
    models: ModelStore
    pipeline: FacePipeline
    backend: InferenceBackend
    jobs: JobQueue | None = None
    metrics: Metrics = field(default_factory=Metrics)
    #: The decode budget of FER_DECODE_BUDGET_PIXELS, shared by every request.
    budget: PixelBudget = field(init=False)

    def __post_init__(self) -> None:
        s = self.settings
        self.budget = PixelBudget(s.decode_budget, s.max_pixels, s.decode_wait, s.retry_after)


async def get_services(request: Request) -> Services:
    """The app's services (503 while the app is starting or stopping). Dependencies are
    `async` so that FastAPI calls them on the event loop, not through a thread pool."""
    services = getattr(request.app.state, "services", None)
    if not isinstance(services, Services):
        raise BackendUnavailable("the service is starting", retry_after=1)
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


CallerDep = Annotated[Caller, Depends(get_caller)]


class CallerJobs:
    """The job queue as one caller sees it: the jobs it creates are its own (with API
    keys), its Idempotency-Keys are its own, and another key's job does not exist for it
    (404). Every route that touches jobs gets this view through `JobsDep`."""

    def __init__(self, queue: JobQueue, caller: Caller) -> None:
        self.queue = queue
        self.owner = caller.id if caller.keyed else None
        self.scope = caller.id

    def _visible(self, record: JobRecord | None) -> JobRecord | None:
        if record is None or (record.owner is not None and record.owner != self.owner):
            return None
        return record

    async def start(self) -> None:
        await self.queue.start()

    async def close(self) -> None:
        await self.queue.close()

    async def submit(
        self,
        kind: str,
        inputs: Mapping[str, bytes],
        params: BaseModel,
        idempotency_key: str | None = None,
        decoded: Mapping[str, Decoded] | None = None,
        *,
        owner: str | None = None,
        scope: str = "",
    ) -> tuple[JobRecord, bool]:
        """Queue a job owned by this caller (`owner` and `scope` are the caller's)."""
        return await self.queue.submit(
            kind, inputs, params, idempotency_key, decoded, owner=self.owner, scope=self.scope
        )

    async def get(self, job_id: str) -> JobRecord | None:
        return self._visible(await self.queue.get(job_id))

    async def wait(self, job_id: str, timeout: float) -> JobRecord | None:
        if await self.get(job_id) is None:
            return None
        return self._visible(await self.queue.wait(job_id, timeout))

    async def result(self, job_id: str) -> bytes | None:
        return await self.queue.result(job_id) if await self.get(job_id) else None

    async def delete(self, job_id: str) -> bool:
        return await self.queue.delete(job_id) if await self.get(job_id) else False

    async def check(self) -> QueueCheck:
        return await self.queue.check()

    async def depth(self) -> int:
        return await self.queue.depth()


async def get_jobs(services: ServicesDep, caller: CallerDep) -> JobQueue:
    """The app's job queue, as the caller of the request sees it (`CallerJobs`)."""
    if services.jobs is None:
        raise ProblemError("queue-unavailable", "the job queue is not started", retry_after=1)
    return CallerJobs(services.jobs, caller)


JobsDep = Annotated[JobQueue, Depends(get_jobs)]
