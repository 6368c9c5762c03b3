"""The Celery app of the job workers: `fer-service worker`, or `celery --app service.worker
worker` (the Dockerfile's `worker` target runs the former; its healthcheck uses the latter).

Configured from the same `FER_*` settings as the gateway (`service.jobs.celery_config`).
Each pool process builds its own `JobRuntime` once, after the fork: the face detector, the
inference backend (FER_BACKEND: the archives in process, or TorchServe) started with the
models the job kinds use, and an event loop that every job of that process runs on. The
task itself is `service.jobs.execution.execute`; transient Redis errors are retried with backoff.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from celery import Celery, Task
from celery.signals import worker_process_init, worker_process_shutdown

from service.jobs.celery_config import RUN_JOB, celery_config
from service.jobs.records import JobMessage
from service.settings import Settings

if TYPE_CHECKING:
    from service.jobs.kinds import JobRuntime
    from service.jobs.stores import RedisJobStore

log = logging.getLogger(__name__)

settings = Settings()
app = Celery("fer-service", set_as_current=True)
app.conf.update(celery_config(settings))


@dataclass
class WorkerRuntime:
    """What one worker process runs jobs with."""

    loop: asyncio.AbstractEventLoop
    store: RedisJobStore
    runtime: JobRuntime

    @classmethod
    def build(cls, settings: Settings) -> WorkerRuntime:
        """Load the detector and the models of every job kind (those in the store)."""
        from service.catalog import ModelStore
        from service.faces import RetinaFaceDetector
        from service.imaging import configure_pillow
        from service.inference import make_backend
        from service.jobs.kinds import JobRuntime
        from service.jobs.registry import KINDS
        from service.jobs.stores import RedisJobStore
        from service.metrics import Metrics
        from service.pipeline import FacePipeline

        configure_pillow(settings.max_pixels)
        loop = asyncio.new_event_loop()
        models = ModelStore.from_settings(settings)
        # The archives of the kinds, and the classifiers video jobs may name.
        wanted = {k.model for k in KINDS.values()} | {e.name for e in models if e.is_classifier}
        missing = sorted(wanted - set(models.entries))
        if missing:
            log.warning("the model store %s lacks %s", settings.model_store, ", ".join(missing))
        backend = make_backend(settings)
        loop.run_until_complete(backend.start([e for e in models if e.name in wanted]))
        pipeline = FacePipeline.from_settings(settings, RetinaFaceDetector.from_settings(settings))
        store = RedisJobStore(
            str(settings.redis_url), settings.redis_prefix, settings.redis_timeout
        )
        metrics = Metrics() if settings.worker_metrics_port else None
        return cls(loop, store, JobRuntime(settings, models, pipeline, backend, metrics))

    def close(self) -> None:
        self.loop.run_until_complete(self.runtime.backend.close())
        self.loop.run_until_complete(self.store.close())
        self.loop.close()


_runtime: WorkerRuntime | None = None


def runtime() -> WorkerRuntime:
    """This process's runtime, built on first use."""
    global _runtime
    if _runtime is None:
        _runtime = WorkerRuntime.build(settings)
    return _runtime


@worker_process_init.connect
def _load(**_: Any) -> None:
    """Load the models when a pool process starts, not on its first job; serve its
    metrics when FER_WORKER_METRICS_PORT is set (one port per pool process)."""
    metrics = runtime().runtime.metrics
    if settings.worker_metrics_port and metrics is not None:
        from billiard.process import current_process
        from prometheus_client import start_http_server

        port = settings.worker_metrics_port + int(getattr(current_process(), "index", 0))
        start_http_server(port, addr="0.0.0.0", registry=metrics.registry)
        log.info("job metrics on port %d", port)


@worker_process_shutdown.connect
def _unload(**_: Any) -> None:
    global _runtime
    if _runtime is not None:
        _runtime.close()
        _runtime = None


# max_retries=None: retries after backend errors are counted (and bounded) by `execute`.
@app.task(name=RUN_JOB, bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None)
def run_job(self: Task, message: dict[str, Any]) -> dict[str, Any]:
    """Run one job (a `JobMessage`); returns its id and status (Celery's result)."""
    from redis.exceptions import ConnectionError, TimeoutError

    from service.jobs.execution import execute

    job = JobMessage.model_validate(message)
    rt = runtime()
    try:
        ran = rt.loop.run_until_complete(execute(job.job_id, rt.store, rt.runtime))
    except (ConnectionError, TimeoutError) as exc:
        retry = self.request.retries + 1
        log.warning("job %s: Redis failed (%s); retry %d", job.job_id, exc, retry)
        raise self.retry(
            exc=exc, countdown=settings.retry_delay(retry), max_retries=settings.job_retries
        ) from exc
    if ran.retry_in is not None:
        raise self.retry(countdown=ran.retry_in)
    return {"job": job.job_id, "status": ran.status}
