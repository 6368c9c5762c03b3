"""The job machinery without a broker: settings, the in-memory store, `execute`'s retries
and redelivery rules, content negotiation, the Celery configuration and the CLI."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError
from starlette.requests import Request

from service.api.jobs import wants_json
from service.catalog import ModelStore
from service.cli import build_parser
from service.faces import RetinaFaceDetector
from service.inference import LocalBackend
from service.jobs.celery_config import celery_config
from service.jobs.execution import MAX_REDELIVERIES, execute
from service.jobs.kinds import JobRuntime
from service.jobs.queues import safe_url
from service.jobs.records import JobRecord, new_job_id, utcnow
from service.jobs.stores import MemoryJobStore
from service.jobs.transfer import TransferParams
from service.pipeline import FacePipeline
from service.settings import Settings

DATA = Path(__file__).resolve().parents[1] / "data"


def test_visibility_timeout_must_outlast_the_longest_job() -> None:
    s = Settings(job_timeout=10, job_retries=3, job_retry_backoff=2, job_visibility_timeout=19)
    assert [s.retry_delay(n) for n in range(5)] == [0, 2, 4, 8, 16]
    assert Settings(job_retry_backoff=50).retry_delay(3) == 60  # capped
    with pytest.raises(ValidationError, match="must exceed the longest job"):
        Settings(job_timeout=10, job_retries=3, job_retry_backoff=2, job_visibility_timeout=18)


def test_celery_configuration() -> None:
    settings = Settings(redis_url="redis://:secret@redis:6379/2", redis_prefix="p:", job_ttl=77)
    conf = celery_config(settings)
    assert conf["task_acks_late"] and conf["task_reject_on_worker_lost"]
    assert conf["worker_prefetch_multiplier"] == 1
    transport = conf["broker_transport_options"]
    assert transport["visibility_timeout"] == settings.job_visibility_timeout
    assert transport["global_keyprefix"] == "p:"
    assert conf["result_backend_transport_options"]["global_keyprefix"] == "p:"
    assert conf["result_expires"] == 77
    assert settings.job_timeout < conf["task_time_limit"] < settings.job_visibility_timeout
    assert safe_url(conf["broker_url"]) == "redis://:***@redis:6379/2"
    assert safe_url("redis://redis:6379/0") == "redis://redis:6379/0"


def test_worker_app_and_command() -> None:
    from service.jobs.celery_config import RUN_JOB
    from service.worker import app

    assert RUN_JOB in app.tasks and app.conf.task_acks_late
    args = build_parser().parse_args(["worker", "--concurrency", "2", "--pool", "solo"])
    assert (args.func.__name__, args.concurrency, args.pool) == ("cmd_worker", 2, "solo")


def test_gateway_submits_jobs_without_torch() -> None:
    """The gateway names the task; the worker's code (and torch) stays out of it."""
    code = (
        "import sys, service.app, service.jobs.queues, service.api.transfer; "
        "assert 'torch' not in sys.modules and 'service.worker' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.parametrize(
    ("accept", "json"),
    [
        ("", False),
        ("*/*", False),
        ("application/json", True),
        ("image/png", False),
        ("image/png;q=0.5, application/json", True),
        ("application/json;q=0.4, image/*", False),
        ("text/html, application/*;q=0.9", True),
    ],
)
def test_accept_negotiation(accept: str, json: bool) -> None:
    request = Request({"type": "http", "headers": [(b"accept", accept.encode())]})
    assert wants_json(request) is json


def record(**fields: object) -> JobRecord:
    now = utcnow()
    values: dict[str, object] = {
        "id": new_job_id(),
        "kind": "transfer",
        "params": TransferParams().model_dump(),
        "inputs": ["face", "expression"],
        "created_at": now,
        "expires_at": now + timedelta(seconds=60),
        **fields,
    }
    return JobRecord.model_validate(values)


def test_memory_store() -> None:
    async def scenario() -> None:
        store = MemoryJobStore()
        job = record(idempotency="k")
        assert (await store.create(job, {"face": b"1", "expression": b"2"}, 60))[1]
        again, created = await store.create(record(idempotency="k"), {}, 60)
        assert not created and again.id == job.id
        assert await store.inputs(job.id) == {"face": b"1", "expression": b"2"}
        job.status = "succeeded"
        assert await store.finish(job, b"png", 0.05)  # type: ignore[arg-type]
        assert await store.inputs(job.id) is None and await store.result(job.id) == b"png"
        await asyncio.sleep(0.06)
        assert await store.get(job.id) is None  # expired
        assert not await store.update(job) and not await store.finish(job, b"", 60)
        assert (await store.create(record(idempotency="k"), {}, 60))[1]  # the key is free

    asyncio.run(scenario())


@pytest.fixture(scope="module")
def runtime(transfer_store: Callable[[float], Path]) -> JobRuntime:
    """A runtime whose backend has not loaded `tdgan`: every run meets `model-not-ready`."""
    store = transfer_store(0.0)
    settings = Settings(model_store=store, job_retries=1, job_retry_backoff=0.5)
    pipeline = FacePipeline.from_settings(settings, RetinaFaceDetector())
    return JobRuntime(settings, ModelStore.from_settings(settings), pipeline, LocalBackend())


def test_transient_backend_errors_are_retried_then_fail(runtime: JobRuntime) -> None:
    uploads = {n: (DATA / "astronaut.jpg").read_bytes() for n in ("face", "expression")}

    async def scenario() -> None:
        store = MemoryJobStore()
        job = record()
        await store.create(job, uploads, 60)
        ran = await execute(job.id, store, runtime)
        assert ran.status == "queued" and ran.retry_in == 0.5
        assert (await store.get(job.id)).retries == 1  # type: ignore[union-attr]
        ran = await execute(job.id, store, runtime)
        assert ran.status == "failed" and ran.retry_in is None
        failed = await store.get(job.id)
        assert failed is not None and failed.attempts == 2 and failed.error is not None
        assert failed.error.type.endswith(":model-not-ready")
        assert failed.error.instance == f"/jobs/{job.id}"
        assert await store.inputs(job.id) is None
        assert (await execute(job.id, store, runtime)).status == "failed"  # delivered again
        assert (await execute(new_job_id(), store, runtime)).status is None  # gone

    asyncio.run(scenario())


def test_a_job_that_keeps_killing_workers_is_failed(runtime: JobRuntime) -> None:
    async def scenario() -> None:
        store = MemoryJobStore()
        limit = runtime.settings.job_retries + MAX_REDELIVERIES
        job = record(status="running", attempts=limit)
        await store.create(job, {"face": b"", "expression": b""}, 60)
        assert (await execute(job.id, store, runtime)).status == "failed"
        failed = await store.get(job.id)
        assert failed is not None and failed.error is not None
        assert f"started {limit} times" in failed.error.detail

    asyncio.run(scenario())
