"""`execute`: the one place that runs a job, wherever it runs (a Celery worker or the
gateway's own pool).

It loads the record, marks it running, runs its kind's `run` under `job_timeout` (with a
callback through which the job reports its progress into its record), and stores the
result or the problem it failed with. Inference backend errors that may pass
(unavailable, not ready, timeout) are retried with exponential backoff, `job_retries`
times; a job that was started too often (workers dying on it) is failed instead of being
run forever. Delivery is at least once, so `execute` tolerates running a job again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from pydantic import BaseModel

from service.jobs.kinds import JobKind, JobOutput, JobRuntime, Progress
from service.jobs.records import FINISHED, JobRecord, job_problem, utcnow
from service.jobs.registry import KINDS
from service.jobs.stores import JobStore
from service.pipeline import Decoded
from service.problems import ProblemError, ProblemSlug
from service.schemas import JobProgress, JobState, Problem
from service.settings import Settings

log = logging.getLogger(__name__)

#: Starts of one job beyond its retries (each death of a worker on it costs one).
MAX_REDELIVERIES = 3

#: Problem slugs of inference errors that may pass, so the job is retried.
TRANSIENT: tuple[ProblemSlug, ...] = ("backend-unavailable", "model-not-ready", "backend-timeout")


@dataclass(frozen=True)
class Execution:
    """How one run of `execute` ended: the job's status, and when to run it again."""

    status: JobState | None  # None: the job is gone (deleted or expired)
    retry_in: float | None = None


async def execute(
    job_id: str,
    store: JobStore,
    runtime: JobRuntime,
    decoded: Mapping[str, Decoded] | None = None,
) -> Execution:
    """Run job `job_id` once and store what came of it (`run_once`); a job that ended is
    timed by outcome in `runtime.metrics`, where there are metrics."""
    ran = await run_once(job_id, store, runtime, decoded)
    if ran.status in FINISHED and runtime.metrics is not None:
        record = await store.get(job_id)
        if record is not None and record.finished_at is not None:
            seconds = (record.finished_at - record.created_at).total_seconds()
            runtime.metrics.jobs.labels(record.kind, record.status).observe(seconds)
    return ran


async def run_once(
    job_id: str,
    store: JobStore,
    runtime: JobRuntime,
    decoded: Mapping[str, Decoded] | None = None,
) -> Execution:
    """Run job `job_id` once and store what came of it (see the module docstring).

    The job runs on `decoded`, its uploads as the gateway already decoded (or probed) them
    when it runs in the gateway's process; else the uploads are decoded here, once.

    Safe to call again for the same job: a finished or vanished job is left alone, and a
    job found `running` was interrupted (its worker died) and starts over.
    """
    settings = runtime.settings
    record = await store.get(job_id)
    if record is None:
        log.info("job %s is gone (deleted or expired); skipping it", job_id)
        return Execution(None)
    if record.finished:
        log.info("job %s was delivered again after it %s; skipping it", job_id, record.status)
        return Execution(record.status)
    if record.status == "running":
        log.warning(
            "job %s was interrupted (attempt %d); running it again", job_id, record.attempts
        )
    if record.attempts >= settings.job_retries + MAX_REDELIVERIES:
        detail = f"the job was started {record.attempts} times without finishing"
        return await _fail(store, record, job_problem("internal-error", detail, job_id), settings)
    record.status, record.started_at = "running", utcnow()
    record.attempts += 1
    record.progress = None
    if not await store.update(record):
        return Execution(None)
    inputs = await store.inputs(job_id)
    kind = KINDS.get(record.kind)
    if kind is None or inputs is None or set(kind.inputs) - set(inputs):
        why = f"unknown job kind '{record.kind}'" if kind is None else "its uploads are gone"
        return await _fail(store, record, job_problem("internal-error", why, job_id), settings)
    started = asyncio.get_running_loop().time()
    try:
        params = kind.params.model_validate(record.params)
        uploads = {n: inputs[n] for n in kind.inputs}
        run = _run(kind, runtime, uploads, decoded, params, _reporter(store, record))
        output = await asyncio.wait_for(run, settings.job_timeout)
    except ProblemError as exc:
        if exc.kind.slug in TRANSIENT and record.retries < settings.job_retries:
            record.retries += 1
            record.status = "queued"
            delay = settings.retry_delay(record.retries)
            log.warning("job %s: %s; retry %d in %.1f s", job_id, exc, record.retries, delay)
            if not await store.update(record):
                return Execution(None)
            return Execution("queued", retry_in=delay)
        return await _fail(store, record, job_problem(exc.kind.slug, exc.detail, job_id), settings)
    except TimeoutError:
        detail = f"the job did not finish within {settings.job_timeout:g} s"
        return await _fail(store, record, job_problem("job-timeout", detail, job_id), settings)
    except Exception:  # noqa: BLE001 - a bug: logged with its traceback, reported as 500
        log.exception("job %s (%s) failed", job_id, record.kind)
        detail = "the job failed unexpectedly"
        return await _fail(store, record, job_problem("internal-error", detail, job_id), settings)
    record.status, record.finished_at = "succeeded", utcnow()
    record.expires_at = record.finished_at + timedelta(seconds=settings.job_ttl)
    record.outcome = output.outcome
    if not await store.finish(record, output.image, settings.job_ttl):
        return Execution(None)
    elapsed = asyncio.get_running_loop().time() - started
    log.info("job %s (%s) succeeded in %.2f s", job_id, record.kind, elapsed)
    return Execution("succeeded")


async def _run(
    kind: JobKind,
    runtime: JobRuntime,
    inputs: Mapping[str, bytes],
    decoded: Mapping[str, Decoded] | None,
    params: BaseModel,
    progress: Progress,
) -> JobOutput:
    if decoded is None:
        decoded = await asyncio.to_thread(runtime.pipeline.prepare, kind.media, inputs)
    return await kind.run(runtime, decoded, params, progress)


def _reporter(store: JobStore, record: JobRecord) -> Progress:
    """The progress callback of a run: it writes `done` of `total` into the job's record
    (`GET /jobs/{id}` shows it)."""

    async def report(done: int, total: int | None) -> None:
        record.progress = JobProgress(done=done, total=total)
        await store.update(record)

    return report


async def _fail(
    store: JobStore, record: JobRecord, error: Problem, settings: Settings
) -> Execution:
    record.status, record.finished_at, record.error = "failed", utcnow(), error
    record.expires_at = record.finished_at + timedelta(seconds=settings.job_ttl)
    log.info("job %s (%s) failed: %s", record.id, record.kind, error.detail)
    if not await store.finish(record, None, settings.job_ttl):
        return Execution(None)
    return Execution("failed")
