"""What the routes share: the running services of the app, as `Annotated` dependencies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from service.catalog import ModelStore
from service.inference import InferenceBackend
from service.jobs.queues import JobQueue
from service.pipeline import FacePipeline
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


def get_services(request: Request) -> Services:
    """The app's services (503 while the app is starting or stopping)."""
    services = getattr(request.app.state, "services", None)
    if not isinstance(services, Services):
        raise BackendUnavailable("the service is starting", retry_after=1)
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_jobs(services: ServicesDep) -> JobQueue:
    """The app's job queue."""
    if services.jobs is None:
        raise ProblemError("queue-unavailable", "the job queue is not started", retry_after=1)
    return services.jobs


JobsDep = Annotated[JobQueue, Depends(get_jobs)]
