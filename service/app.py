"""The gateway application: `create_app(settings)` wires routes, lifespan and errors."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from service.api import classify, frontalize, health, jobs, metrics, models, transfer, video
from service.api.deps import Services
from service.api.errors import document_problems, install_error_handlers
from service.api.guard import Guard, document_access
from service.api.metrics import MetricsMiddleware
from service.api.web import install_web
from service.catalog import ModelStore
from service.faces import FaceDetector, RetinaFaceDetector
from service.frontalization import log_framings
from service.imaging import configure_pillow
from service.inference import InferenceBackend, make_backend
from service.jobs.kinds import JobRuntime
from service.jobs.queues import make_jobs
from service.metrics import Metrics
from service.pipeline import FacePipeline
from service.settings import Settings

log = logging.getLogger(__name__)

DESCRIPTION = """\
Facial expression recognition as a REST service.

`POST /classify` finds every face in a photo (box, 5 landmarks), aligns each one to the
crop its model was trained on and returns the probabilities of the 7 FER2013 expressions
(angry, disgust, fear, happy, sad, surprise, neutral). Errors are
`application/problem+json` documents whose `type` identifies the kind of error.

`POST /transfer` queues an expression transfer between the faces of two photos and answers
`202` with a job; `GET /jobs/{id}` tells where it stands and `GET /jobs/{id}/result` gives
the generated face as a PNG. `POST /frontalize` queues the frontal view of a turned face the
same way. `POST /classify/video` queues a clip: every face followed over time as a track,
its expression per sampled frame and one label per track (JSON, or a timeline picture).
"""


def _version() -> str:
    try:
        return version("fer-service")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0.0.0"


class Gateway(FastAPI):
    """FastAPI whose OpenAPI document describes the problem+json errors as they are sent,
    and the API keys (`open_paths`: the paths that need none)."""

    open_paths: tuple[str, ...] = ()

    def openapi(self) -> dict[str, Any]:
        if not self.openapi_schema:
            spec = document_access(super().openapi(), self.open_paths)
            self.openapi_schema = document_problems(spec)
        return self.openapi_schema


def create_app(
    settings: Settings | None = None,
    *,
    detector: FaceDetector | None = None,
    backend: InferenceBackend | None = None,
) -> FastAPI:
    """The gateway app. Models load, and the detector starts, in the app's lifespan.

    `detector` and `backend` default to what `settings` describe (RetinaFace, and the
    backend `settings.backend` names).
    """
    settings = settings or Settings()
    configure_pillow(settings.max_pixels)
    registry = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = ModelStore.from_settings(settings)
        if not store:
            log.error("no model archive in %s", settings.model_store)
        log_framings(store)
        pipeline = FacePipeline.from_settings(
            settings, detector or RetinaFaceDetector.from_settings(settings)
        )
        inference = backend or make_backend(settings)
        await inference.start(list(store))
        runtime = JobRuntime(settings, store, pipeline, inference, metrics=registry)
        job_queue = make_jobs(settings, runtime)
        await job_queue.start()
        app.state.services = Services(
            settings, store, pipeline, inference, job_queue, metrics=registry
        )
        log.info(
            "serving %s with the %s backend (default model %s)",
            ", ".join(store.entries) or "no models",
            settings.backend,
            store.default,
        )
        try:
            yield
        finally:
            del app.state.services
            await job_queue.close()
            await inference.close()

    app = Gateway(
        title="fer-service",
        version=_version(),
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.open_paths = tuple(settings.open_paths)
    app.state.metrics = registry
    install_error_handlers(app)
    # Outermost last: CORS answers preflights and decorates every answer (401s included),
    # the metrics see every request, the guard refuses before any route runs.
    app.add_middleware(Guard, settings=settings)
    app.add_middleware(MetricsMiddleware, metrics=registry)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "Idempotency-Key"],
            expose_headers=["Location", "Retry-After", "Idempotent-Replayed", "Server-Timing"],
        )
    app.include_router(classify.router)
    app.include_router(transfer.router)
    app.include_router(frontalize.router)
    app.include_router(video.router)
    app.include_router(jobs.router)
    app.include_router(models.router)
    app.include_router(health.router)
    install_web(app)
    app.include_router(metrics.router)
    return app
