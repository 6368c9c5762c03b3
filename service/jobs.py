"""Queued jobs: the `JobQueue` behind /transfer (and /frontalize), and `execute`, which runs
one job wherever it runs.

A job is a `JobRecord` (kind, parameters, state, timestamps, error, what it produced), its
uploaded images and, once it succeeded, a PNG. A `JobStore` keeps the three for `job_ttl`
seconds: the uploads until the job finishes (then they are deleted), the record and the
PNG from when it finishes. Two queues implement `JobQueue` over a store:

- `CeleryJobs` (production): records, uploads and results in Redis (`RedisJobStore`);
  the gateway publishes a `JobMessage` (the job id only) under the task name `RUN_JOB`
  without importing the worker's code; Celery workers (`service/worker.py`) take it from
  the Redis broker and run `execute`. Delivery is at least once: messages are acknowledged
  after the job ran (`acks_late`), a worker process that dies mid-job gives its message
  back (`reject_on_worker_lost`), and a whole worker that dies leaves it unacknowledged
  until the broker's visibility timeout makes it visible again to the other workers.
  `execute` therefore tolerates running a job again.
- `LocalJobs` (embedded default): the same records in memory (`MemoryJobStore`), run by a
  bounded pool of asyncio tasks in the gateway process.

`execute` is the one place that runs a job: it loads the record, marks it running, runs
its kind's `run` (service/jobkinds.py) under `job_timeout`, and stores the PNG or the
problem it failed with. Inference backend errors that may pass (unavailable, not ready,
timeout) are retried with exponential backoff, `job_retries` times; a job that was started
too often (workers dying on it) is failed instead of being run forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, Field

from service.errors import PROBLEMS, ProblemError
from service.jobkinds import KINDS, JobOutcome, JobRuntime
from service.schemas import JobState, Problem
from service.settings import Settings

if TYPE_CHECKING:
    from celery import Celery
    from redis.asyncio import Redis

log = logging.getLogger(__name__)

#: The Celery task that runs a job (service/worker.py defines it; the gateway only names it).
RUN_JOB = "fer.run_job"

#: The broker queue of jobs.
QUEUE = "fer-jobs"

#: Starts of one job beyond its retries (each death of a worker on it costs one).
MAX_REDELIVERIES = 3

#: Problem slugs of inference errors that may pass, so the job is retried.
TRANSIENT = ("backend-unavailable", "model-not-ready", "backend-timeout")

FINISHED: tuple[JobState, ...] = ("succeeded", "failed")


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_job_id() -> str:
    return uuid.uuid4().hex


class JobRecord(BaseModel):
    """A job's state, kept by the `JobStore` (not the uploads nor the PNG)."""

    id: str
    kind: str
    status: JobState = "queued"
    params: dict[str, Any] = Field(default_factory=dict)
    inputs: list[str] = Field(description="names of the uploaded images")
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    expires_at: datetime
    attempts: int = Field(default=0, description="times a worker started it")
    retries: int = Field(default=0, description="retries after transient backend errors")
    error: Problem | None = None
    outcome: JobOutcome | None = None
    idempotency: str | None = Field(default=None, description="digest of the Idempotency-Key")

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


class JobMessage(BaseModel):
    """The broker message of a job: its id (uploads and parameters stay in the store)."""

    job_id: str
    kind: str


def problem(slug: str, detail: str, job_id: str) -> Problem:
    """The problem document of kind `slug` with which job `job_id` failed."""
    kind = PROBLEMS[slug]
    return Problem(
        type=kind.type,
        title=kind.title,
        status=kind.status,
        detail=detail,
        instance=f"/jobs/{job_id}",
    )


def idempotency_digest(kind: str, key: str) -> str:
    """What the stores keep of an Idempotency-Key: a digest, scoped by job kind."""
    return hashlib.sha256(f"{kind}\0{key}".encode()).hexdigest()


def safe_url(url: str) -> str:
    """`url` without its password, for logs and /readyz."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


# -- stores -----------------------------------------------------------------------------------


class JobStore(Protocol):
    """Keeps job records, their uploads and their results, each for a TTL."""

    async def create(
        self, record: JobRecord, inputs: Mapping[str, bytes], ttl: int
    ) -> tuple[JobRecord, bool]:
        """Store a new job; with `record.idempotency` set and a live job already holding
        that key, store nothing and return that job and False."""
        ...

    async def get(self, job_id: str) -> JobRecord | None:
        """The record, or None when unknown, expired or deleted."""
        ...

    async def inputs(self, job_id: str) -> dict[str, bytes] | None:
        """The uploads of an unfinished job."""
        ...

    async def update(self, record: JobRecord) -> bool:
        """Replace a live record (keeping its TTL); False if it is gone."""
        ...

    async def finish(self, record: JobRecord, image: bytes | None, ttl: int) -> bool:
        """Store the finished record and its PNG for `ttl` and delete the uploads,
        atomically, if the job still exists; False if it is gone."""
        ...

    async def result(self, job_id: str) -> bytes | None:
        """The PNG of a succeeded job."""
        ...

    async def delete(self, job_id: str) -> bool:
        """Forget a job, its uploads and its result; False if there was none."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


# Redis: `finish` in one script, so that a job deleted meanwhile stays deleted.
_FINISH = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('DEL', KEYS[2])
if ARGV[3] ~= '' then redis.call('SET', KEYS[3], ARGV[3], 'EX', ARGV[2]) end
if KEYS[4] then redis.call('EXPIRE', KEYS[4], ARGV[2]) end
return 1
"""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


class RedisJobStore:
    """Jobs in Redis under `prefix`: `job:<id>` (the record, JSON), `job:<id>:inputs` (a
    hash of the uploads), `job:<id>:result` (the PNG), `idem:<digest>` (the job of an
    Idempotency-Key). Every key has a TTL."""

    def __init__(self, url: str, prefix: str, timeout: float) -> None:
        from redis.asyncio import Redis
        from redis.backoff import ExponentialBackoff
        from redis.retry import Retry

        self.url = url
        self.prefix = prefix
        # Fail fast when Redis is down (the gateway answers 503), but ride over one dropped
        # connection with a quick retry.
        self.redis: Redis = Redis.from_url(
            url,
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            retry=Retry(ExponentialBackoff(cap=0.2, base=0.05), 1),
            health_check_interval=30,
        )
        self._finish = self.redis.register_script(_FINISH)

    def _key(self, job_id: str, part: str = "") -> str:
        return f"{self.prefix}job:{job_id}{part}"

    def _idem(self, digest: str) -> str:
        return f"{self.prefix}idem:{digest}"

    async def create(
        self, record: JobRecord, inputs: Mapping[str, bytes], ttl: int
    ) -> tuple[JobRecord, bool]:
        if record.idempotency:
            key = self._idem(record.idempotency)
            if not await self.redis.set(key, record.id, nx=True, ex=ttl):
                held = await self.redis.get(key)
                existing = await self.get(_text(held)) if held else None
                if existing is not None:
                    return existing, False
                await self.redis.set(key, record.id, ex=ttl)  # its job was deleted: take it
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self._key(record.id), record.model_dump_json(), ex=ttl)
            uploads: dict[Any, bytes] = dict(inputs)  # redis-py's key type is invariant
            pipe.hset(self._key(record.id, ":inputs"), mapping=uploads)
            pipe.expire(self._key(record.id, ":inputs"), ttl)
            await pipe.execute()
        return record, True

    async def get(self, job_id: str) -> JobRecord | None:
        raw = await self.redis.get(self._key(job_id))
        return JobRecord.model_validate_json(raw) if raw else None

    async def inputs(self, job_id: str) -> dict[str, bytes] | None:
        raw = await self.redis.hgetall(self._key(job_id, ":inputs"))
        return {_text(k): _bytes(v) for k, v in raw.items()} if raw else None

    async def update(self, record: JobRecord) -> bool:
        done = await self.redis.set(
            self._key(record.id), record.model_dump_json(), xx=True, keepttl=True
        )
        return bool(done)

    async def finish(self, record: JobRecord, image: bytes | None, ttl: int) -> bool:
        keys = [self._key(record.id, part) for part in ("", ":inputs", ":result")]
        if record.idempotency:
            keys.append(self._idem(record.idempotency))
        done = await self._finish(keys=keys, args=[record.model_dump_json(), ttl, image or b""])
        return bool(done)

    async def result(self, job_id: str) -> bytes | None:
        data = await self.redis.get(self._key(job_id, ":result"))
        return _bytes(data) if data else None

    async def delete(self, job_id: str) -> bool:
        record = await self.get(job_id)
        keys = [self._key(job_id, part) for part in ("", ":inputs", ":result")]
        if record is not None and record.idempotency:
            keys.append(self._idem(record.idempotency))
        return record is not None and bool(await self.redis.delete(*keys))

    async def ping(self) -> None:
        await self.redis.ping()

    async def queued(self) -> int:
        """Messages waiting in the broker queue."""
        return int(await self.redis.llen(f"{self.prefix}{QUEUE}"))

    async def close(self) -> None:
        await self.redis.aclose()


@dataclass
class _Stored:
    record: JobRecord
    inputs: dict[str, bytes] | None
    image: bytes | None
    expires: float  # loop.time()


class MemoryJobStore:
    """Jobs in this process, with the same TTLs as in Redis (expired ones are swept on
    every access)."""

    def __init__(self) -> None:
        self._jobs: dict[str, _Stored] = {}
        self._idem: dict[str, str] = {}

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _sweep(self) -> None:
        now = self._now()
        for job_id in [i for i, s in self._jobs.items() if s.expires <= now]:
            self._forget(job_id)

    def _forget(self, job_id: str) -> bool:
        stored = self._jobs.pop(job_id, None)
        if stored is not None and stored.record.idempotency:
            self._idem.pop(stored.record.idempotency, None)
        return stored is not None

    async def create(
        self, record: JobRecord, inputs: Mapping[str, bytes], ttl: int
    ) -> tuple[JobRecord, bool]:
        self._sweep()
        if record.idempotency and record.idempotency in self._idem:
            return self._jobs[self._idem[record.idempotency]].record.model_copy(), False
        self._jobs[record.id] = _Stored(record.model_copy(), dict(inputs), None, self._now() + ttl)
        if record.idempotency:
            self._idem[record.idempotency] = record.id
        return record, True

    def _live(self, job_id: str) -> _Stored | None:
        self._sweep()
        return self._jobs.get(job_id)

    async def get(self, job_id: str) -> JobRecord | None:
        stored = self._live(job_id)
        return stored.record.model_copy() if stored else None

    async def inputs(self, job_id: str) -> dict[str, bytes] | None:
        stored = self._live(job_id)
        return dict(stored.inputs) if stored and stored.inputs else None

    async def update(self, record: JobRecord) -> bool:
        stored = self._live(record.id)
        if stored is None:
            return False
        stored.record = record.model_copy()
        return True

    async def finish(self, record: JobRecord, image: bytes | None, ttl: int) -> bool:
        stored = self._live(record.id)
        if stored is None:
            return False
        stored.record, stored.inputs, stored.image = record.model_copy(), None, image
        stored.expires = self._now() + ttl
        return True

    async def result(self, job_id: str) -> bytes | None:
        stored = self._live(job_id)
        return stored.image if stored else None

    async def delete(self, job_id: str) -> bool:
        self._sweep()
        return self._forget(job_id)

    async def close(self) -> None:
        self._jobs.clear()
        self._idem.clear()


# -- running one job --------------------------------------------------------------------------


@dataclass(frozen=True)
class Execution:
    """How one run of `execute` ended: the job's status, and when to run it again."""

    status: JobState | None  # None: the job is gone (deleted or expired)
    retry_in: float | None = None


async def execute(job_id: str, store: JobStore, runtime: JobRuntime) -> Execution:
    """Run job `job_id` once and store what came of it (see the module docstring).

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
        return await _fail(store, record, problem("internal-error", detail, job_id), settings)
    record.status, record.started_at = "running", utcnow()
    record.attempts += 1
    if not await store.update(record):
        return Execution(None)
    inputs = await store.inputs(job_id)
    kind = KINDS.get(record.kind)
    if kind is None or inputs is None or set(kind.inputs) - set(inputs):
        why = f"unknown job kind '{record.kind}'" if kind is None else "its uploads are gone"
        return await _fail(store, record, problem("internal-error", why, job_id), settings)
    started = asyncio.get_running_loop().time()
    try:
        params = kind.params.model_validate(record.params)
        output = await asyncio.wait_for(kind.run(runtime, inputs, params), settings.job_timeout)
    except ProblemError as exc:
        if exc.kind.slug in TRANSIENT and record.retries < settings.job_retries:
            record.retries += 1
            record.status = "queued"
            delay = settings.retry_delay(record.retries)
            log.warning("job %s: %s; retry %d in %.1f s", job_id, exc, record.retries, delay)
            if not await store.update(record):
                return Execution(None)
            return Execution("queued", retry_in=delay)
        return await _fail(store, record, problem(exc.kind.slug, exc.detail, job_id), settings)
    except TimeoutError:
        detail = f"the job did not finish within {settings.job_timeout:g} s"
        return await _fail(store, record, problem("job-timeout", detail, job_id), settings)
    except Exception:  # noqa: BLE001 - a bug: logged with its traceback, reported as 500
        log.exception("job %s (%s) failed", job_id, record.kind)
        detail = "the job failed unexpectedly"
        return await _fail(store, record, problem("internal-error", detail, job_id), settings)
    record.status, record.finished_at = "succeeded", utcnow()
    record.expires_at = record.finished_at + timedelta(seconds=settings.job_ttl)
    record.outcome = output.outcome
    if not await store.finish(record, output.image, settings.job_ttl):
        return Execution(None)
    elapsed = asyncio.get_running_loop().time() - started
    log.info("job %s (%s) succeeded in %.2f s", job_id, record.kind, elapsed)
    return Execution("succeeded")


async def _fail(
    store: JobStore, record: JobRecord, error: Problem, settings: Settings
) -> Execution:
    record.status, record.finished_at, record.error = "failed", utcnow(), error
    record.expires_at = record.finished_at + timedelta(seconds=settings.job_ttl)
    log.info("job %s (%s) failed: %s", record.id, record.kind, error.detail)
    if not await store.finish(record, None, settings.job_ttl):
        return Execution(None)
    return Execution("failed")


# -- queues -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueCheck:
    """Whether the queue can take jobs now, and why not (for /readyz)."""

    ok: bool
    detail: str


class JobQueue(Protocol):
    """Accepts jobs and reports on them; what the routes use."""

    async def start(self) -> None:
        """Prepare (connections are opened lazily: a queue starts even when Redis is down)."""
        ...

    async def close(self) -> None:
        """Stop running jobs (local) and close connections."""
        ...

    async def submit(
        self,
        kind: str,
        inputs: Mapping[str, bytes],
        params: BaseModel,
        idempotency_key: str | None = None,
    ) -> tuple[JobRecord, bool]:
        """Queue a job; returns it and whether it is new (False: the Idempotency-Key's job)."""
        ...

    async def get(self, job_id: str) -> JobRecord | None:
        """The job, or None when unknown, expired or deleted."""
        ...

    async def wait(self, job_id: str, timeout: float) -> JobRecord | None:
        """The job once finished, or as it is after `timeout` seconds."""
        ...

    async def result(self, job_id: str) -> bytes | None:
        """The PNG of a succeeded job."""
        ...

    async def delete(self, job_id: str) -> bool:
        """Forget a job (a running one finishes, but its result is dropped)."""
        ...

    async def check(self) -> QueueCheck:
        """Readiness."""
        ...


class StoredJobs:
    """What both queues share: the store operations; subclasses dispatch the jobs."""

    def __init__(self, settings: Settings, store: JobStore) -> None:
        self.settings = settings
        self.store = store

    @contextlib.asynccontextmanager
    async def _reaching_store(self) -> AsyncIterator[None]:
        yield

    async def _dispatch(self, record: JobRecord) -> None:
        raise NotImplementedError

    async def submit(
        self,
        kind: str,
        inputs: Mapping[str, bytes],
        params: BaseModel,
        idempotency_key: str | None = None,
    ) -> tuple[JobRecord, bool]:
        now = utcnow()
        record = JobRecord(
            id=new_job_id(),
            kind=kind,
            params=params.model_dump(),
            inputs=list(inputs),
            created_at=now,
            expires_at=now + timedelta(seconds=self.settings.job_ttl),
            idempotency=idempotency_digest(kind, idempotency_key) if idempotency_key else None,
        )
        async with self._reaching_store():
            record, created = await self.store.create(record, inputs, self.settings.job_ttl)
            if created:
                try:
                    await self._dispatch(record)
                except BaseException:
                    await self.store.delete(record.id)
                    raise
        if created:
            log.info("job %s (%s) queued", record.id, kind)
        return record, created

    async def get(self, job_id: str) -> JobRecord | None:
        async with self._reaching_store():
            return await self.store.get(job_id)

    async def wait(self, job_id: str, timeout: float) -> JobRecord | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        pause = 0.02
        while True:
            record = await self.get(job_id)
            left = deadline - loop.time()
            if record is None or record.finished or left <= 0:
                return record
            await asyncio.sleep(min(pause, left))
            pause = min(0.5, pause * 1.5)

    async def result(self, job_id: str) -> bytes | None:
        async with self._reaching_store():
            return await self.store.result(job_id)

    async def delete(self, job_id: str) -> bool:
        async with self._reaching_store():
            deleted = await self.store.delete(job_id)
        if deleted:
            log.info("job %s deleted", job_id)
        return deleted


class LocalJobs(StoredJobs):
    """Jobs run in the gateway process by `job_workers` asyncio tasks, at most
    `job_queue_size` waiting (then 503 `queue-full`); CPU-bound steps run in threads."""

    def __init__(self, settings: Settings, runtime: JobRuntime) -> None:
        self.memory = MemoryJobStore()
        super().__init__(settings, self.memory)
        self.runtime = runtime
        self._queue: asyncio.Queue[str] = asyncio.Queue(maxsize=settings.job_queue_size)
        self._tasks: set[asyncio.Task[None]] = set()
        self._running = 0

    async def start(self) -> None:
        for _ in range(self.settings.job_workers):
            self._spawn(self._work())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.memory.close()

    async def _dispatch(self, record: JobRecord) -> None:
        try:
            self._queue.put_nowait(record.id)
        except asyncio.QueueFull:
            raise ProblemError(
                "queue-full",
                f"{self._queue.qsize()} jobs are waiting; retry later",
                retry_after=self.settings.retry_after,
            ) from None

    async def _work(self) -> None:
        while True:
            job_id = await self._queue.get()
            self._running += 1
            try:
                ran = await execute(job_id, self.store, self.runtime)
            except Exception:  # noqa: BLE001 - keep the pool alive whatever one job does
                log.exception("job %s could not be run", job_id)
                continue
            finally:
                self._running -= 1
                self._queue.task_done()
            if ran.retry_in is not None:
                self._spawn(self._requeue(job_id, ran.retry_in))

    async def _requeue(self, job_id: str, delay: float) -> None:
        await asyncio.sleep(delay)
        await self._queue.put(job_id)

    async def check(self) -> QueueCheck:
        waiting = self._queue.qsize()
        return QueueCheck(True, f"in-process: {self._running} running, {waiting} waiting")


class CeleryJobs(StoredJobs):
    """Jobs in Redis, run by Celery workers (see the module docstring)."""

    def __init__(self, settings: Settings) -> None:
        self.redis_store = RedisJobStore(
            str(settings.redis_url), settings.redis_prefix, settings.redis_timeout
        )
        super().__init__(settings, self.redis_store)
        self.where = safe_url(str(settings.redis_url))
        self._celery: Celery | None = None

    async def start(self) -> None:
        from celery import Celery

        self._celery = Celery("fer-service", set_as_current=False)
        self._celery.conf.update(celery_config(self.settings))

    async def close(self) -> None:
        await self.redis_store.close()
        if self._celery is not None:
            await asyncio.to_thread(self._celery.close)

    @contextlib.asynccontextmanager
    async def _reaching_store(self) -> AsyncIterator[None]:
        from redis.exceptions import ConnectionError, TimeoutError

        try:
            yield
        except (ConnectionError, TimeoutError, OSError) as exc:
            raise ProblemError(
                "queue-unavailable",
                f"cannot reach Redis at {self.where}: {exc}",
                retry_after=self.settings.retry_after,
            ) from exc

    async def _dispatch(self, record: JobRecord) -> None:
        assert self._celery is not None, "CeleryJobs.start() was not called"
        message = JobMessage(job_id=record.id, kind=record.kind).model_dump()
        celery = self._celery
        try:
            await asyncio.to_thread(
                celery.send_task, RUN_JOB, args=[message], task_id=record.id, queue=QUEUE
            )
        except Exception as exc:  # noqa: BLE001 - kombu's connection errors vary by transport
            raise ProblemError(
                "queue-unavailable",
                f"cannot queue the job at {self.where}: {exc}",
                retry_after=self.settings.retry_after,
            ) from exc

    async def check(self) -> QueueCheck:
        try:
            await self.redis_store.ping()
            waiting = await self.redis_store.queued()
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            return QueueCheck(False, f"cannot reach Redis at {self.where}: {exc}")
        return QueueCheck(True, f"Redis at {self.where} answers; {waiting} jobs waiting")


def celery_config(settings: Settings) -> dict[str, Any]:
    """The Celery configuration of the gateway (which only publishes) and of the workers."""
    url = str(settings.redis_url)
    visibility = settings.job_visibility_timeout
    return {
        "broker_url": url,
        "result_backend": url,
        "broker_connection_timeout": settings.redis_timeout,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {
            "global_keyprefix": settings.redis_prefix,
            # A message taken by a worker that died is delivered again this long after it
            # was taken: longer than any job (Settings checks), or jobs would run twice.
            "visibility_timeout": visibility,
            # Look for such messages every few seconds (kombu's default is every 100 s).
            "unacked_restore_interval": max(1, min(10, visibility // 4)),
            "unacked_restore_throttle": 1,
            "socket_connect_timeout": settings.redis_timeout,
            "socket_timeout": max(5.0, settings.redis_timeout),
        },
        "result_backend_transport_options": {
            "global_keyprefix": settings.redis_prefix,
            "retry_policy": {"timeout": 5.0},
        },
        "redis_socket_connect_timeout": settings.redis_timeout,
        "redis_socket_timeout": max(5.0, settings.redis_timeout),
        "result_expires": settings.job_ttl,
        "task_default_queue": QUEUE,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        # At-least-once delivery (see the module docstring); one job at a time per process.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        # The gateway answers 503 quickly when Redis is down instead of retrying for long.
        "task_publish_retry_policy": {
            "max_retries": 2,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.5,
        },
        # `execute` stops a job at job_timeout; this hard limit replaces a process stuck
        # in native code, before the message would be delivered to another worker.
        "task_time_limit": settings.job_timeout
        + max(1.0, min(30.0, (visibility - settings.job_timeout) / 2)),
        "worker_send_task_events": False,
    }


def make_jobs(settings: Settings, runtime: JobRuntime) -> JobQueue:
    """The queue `settings.jobs` names (`runtime` runs local jobs)."""
    if settings.jobs == "celery":
        return CeleryJobs(settings)
    return LocalJobs(settings, runtime)
