"""`JobQueue`, what the routes use, and its two implementations over a store:

- `CeleryJobs` (production): records, uploads and results in Redis (`RedisJobStore`); the
  gateway publishes a `JobMessage` (the job id only) under the task name `RUN_JOB` without
  importing the worker's code; Celery workers (service/worker.py) take it from the Redis
  broker and run `execute`. Delivery is at least once: messages are acknowledged after
  the job ran (`acks_late`), a worker process that dies mid-job gives its message back
  (`reject_on_worker_lost`), and a whole worker that dies leaves it unacknowledged until
  the broker's visibility timeout makes it visible again to the other workers.
- `LocalJobs` (embedded default): the same records in memory (`MemoryJobStore`), run by a
  bounded pool of asyncio tasks in the gateway process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel

from service.imaging import DecodedImage
from service.jobs.celery_config import QUEUE, RUN_JOB, celery_config
from service.jobs.execution import execute
from service.jobs.kinds import JobRuntime
from service.jobs.records import (
    JobMessage,
    JobRecord,
    idempotency_digest,
    new_job_id,
    request_digest,
    utcnow,
)
from service.jobs.stores import JobStore, MemoryJobStore, RedisJobStore
from service.pipeline import Decoded
from service.problems import ProblemError
from service.settings import Settings

if TYPE_CHECKING:
    from celery import Celery

log = logging.getLogger(__name__)


def safe_url(url: str) -> str:
    """`url` without its password, for logs and /readyz."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


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
        decoded: Mapping[str, Decoded] | None = None,
        *,
        owner: str | None = None,
        scope: str = "",
    ) -> tuple[JobRecord, bool]:
        """Queue a job; returns it and whether it is new (False: the Idempotency-Key's job).
        `decoded`: the uploads as the caller decoded them (to check them), which a queue
        that runs jobs in this process runs the job on instead of decoding them again.
        `owner`: the API key's id that alone may see the job (None: anyone with its id);
        `scope`: the caller an Idempotency-Key belongs to. The same key with another
        request (other parameters or uploads) is 422 `idempotency-key-reused`."""
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

    async def depth(self) -> int:
        """Jobs waiting to be run (for /metrics)."""
        ...


class StoredJobs:
    """What both queues share: the store operations; subclasses dispatch the jobs."""

    def __init__(self, settings: Settings, store: JobStore) -> None:
        self.settings = settings
        self.store = store

    @contextlib.asynccontextmanager
    async def _reaching_store(self) -> AsyncIterator[None]:
        yield

    async def _dispatch(self, record: JobRecord, decoded: Mapping[str, Decoded] | None) -> None:
        raise NotImplementedError

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
        now = utcnow()
        digest = request_digest(kind, params.model_dump(), inputs) if idempotency_key else None
        record = JobRecord(
            id=new_job_id(),
            kind=kind,
            params=params.model_dump(),
            inputs=list(inputs),
            created_at=now,
            expires_at=now + timedelta(seconds=self.settings.job_ttl),
            idempotency=idempotency_digest(kind, idempotency_key, scope)
            if idempotency_key
            else None,
            request_digest=digest,
            owner=owner,
        )
        async with self._reaching_store():
            record, created = await self.store.create(record, inputs, self.settings.job_ttl)
            if created:
                try:
                    await self._dispatch(record, decoded)
                except BaseException:
                    await self.store.delete(record.id)
                    raise
        if not created and record.request_digest != digest:
            raise ProblemError(
                "idempotency-key-reused",
                f"the Idempotency-Key '{idempotency_key}' was used for a different request "
                "(other parameters or images); use a new key for a new request",
            )
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


def _pixels(decoded: Mapping[str, Decoded]) -> int:
    """Pixels that decoded uploads hold (a probed video holds none: its job decodes it)."""
    return sum(
        d.image.width * d.image.height for d in decoded.values() if isinstance(d, DecodedImage)
    )


class LocalJobs(StoredJobs):
    """Jobs run in the gateway process by `job_workers` asyncio tasks, at most
    `job_queue_size` waiting (then 503 `queue-full`); CPU-bound steps run in threads.

    A job runs on the pixels the route decoded to check its uploads (kept here until the
    job finishes), so each upload is decoded once."""

    def __init__(self, settings: Settings, runtime: JobRuntime) -> None:
        self.memory = MemoryJobStore()
        super().__init__(settings, self.memory)
        self.runtime = runtime
        self._queue: asyncio.Queue[str] = asyncio.Queue(maxsize=settings.job_queue_size)
        self._tasks: set[asyncio.Task[None]] = set()
        self._running = 0
        # The uploads of the jobs held here, as the route decoded them, until they finish;
        # at most the decode budget's pixels of them (beyond it a job decodes its uploads
        # when it runs, `job_workers` at a time), so waiting jobs cannot grow memory.
        self._decoded: dict[str, dict[str, Decoded]] = {}
        self.retained_pixels = 0

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
        self._decoded.clear()
        self.retained_pixels = 0
        await self.memory.close()

    async def _dispatch(self, record: JobRecord, decoded: Mapping[str, Decoded] | None) -> None:
        try:
            self._queue.put_nowait(record.id)
        except asyncio.QueueFull:
            raise ProblemError(
                "queue-full",
                f"{self._queue.qsize()} jobs are waiting; retry later",
                retry_after=self.settings.retry_after,
            ) from None
        pixels = _pixels(decoded or {})
        if decoded is not None and self.retained_pixels + pixels <= self.settings.decode_budget:
            self._decoded[record.id] = dict(decoded)
            self.retained_pixels += pixels

    async def _work(self) -> None:
        while True:
            job_id = await self._queue.get()
            self._running += 1
            try:
                ran = await execute(job_id, self.store, self.runtime, self._decoded.get(job_id))
            except Exception:  # noqa: BLE001 - keep the pool alive whatever one job does
                log.exception("job %s could not be run", job_id)
                self._release(job_id)
                continue
            finally:
                self._running -= 1
                self._queue.task_done()
            if ran.retry_in is not None:
                self._spawn(self._requeue(job_id, ran.retry_in))
            else:  # finished or gone: its pixels are no longer needed
                self._release(job_id)

    def _release(self, job_id: str) -> None:
        images = self._decoded.pop(job_id, None) or {}
        self.retained_pixels -= _pixels(images)

    async def _requeue(self, job_id: str, delay: float) -> None:
        await asyncio.sleep(delay)
        await self._queue.put(job_id)

    async def check(self) -> QueueCheck:
        waiting = self._queue.qsize()
        return QueueCheck(True, f"in-process: {self._running} running, {waiting} waiting")

    async def depth(self) -> int:
        return self._queue.qsize()


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
        config = celery_config(self.settings)
        # The gateway only publishes: no blocking reads, so its broker connection can wait
        # no longer than any other Redis call, and a paused Redis fails a POST in time.
        config["broker_transport_options"]["socket_timeout"] = self.settings.redis_timeout
        config["task_publish_retry_policy"] = {"max_retries": 0}
        self._celery.conf.update(config)

    async def close(self) -> None:
        await self.redis_store.close()
        if self._celery is not None:
            await asyncio.to_thread(self._celery.close)

    @contextlib.asynccontextmanager
    async def _reaching_store(self) -> AsyncIterator[None]:
        from redis.exceptions import ConnectionError, TimeoutError

        try:
            # One bound on the whole call, whatever Redis (or a paused one) does with it.
            async with asyncio.timeout(2 * self.settings.redis_timeout):
                yield
        except (ConnectionError, TimeoutError, OSError) as exc:  # OSError: asyncio's timeout
            raise self._unavailable("cannot reach Redis", exc) from exc

    def _unavailable(self, what: str, exc: BaseException) -> ProblemError:
        """503 `queue-unavailable`; the address and the error go to the log only."""
        log.warning("%s at %s: %s", what, self.where, exc or type(exc).__name__)
        return ProblemError(
            "queue-unavailable",
            "the job queue cannot be reached; retry later",
            retry_after=self.settings.retry_after,
        )

    async def _dispatch(self, record: JobRecord, decoded: Mapping[str, Decoded] | None) -> None:
        # `decoded` stays here: the worker is another process, which decodes the uploads.
        assert self._celery is not None, "CeleryJobs.start() was not called"
        message = JobMessage(job_id=record.id, kind=record.kind).model_dump()
        celery = self._celery
        try:
            await asyncio.to_thread(
                celery.send_task, RUN_JOB, args=[message], task_id=record.id, queue=QUEUE
            )
        except Exception as exc:  # noqa: BLE001 - kombu's connection errors vary by transport
            raise self._unavailable("cannot queue a job", exc) from exc

    async def check(self) -> QueueCheck:
        try:
            async with asyncio.timeout(2 * self.settings.redis_timeout):
                await self.redis_store.ping()
                waiting = await self.redis_store.queued()
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            log.warning("readiness: cannot reach Redis at %s: %s", self.where, exc)
            return QueueCheck(False, "cannot reach Redis")
        return QueueCheck(True, f"Redis answers; {waiting} jobs waiting")

    async def depth(self) -> int:
        async with self._reaching_store():
            return await self.redis_store.queued()


def make_jobs(settings: Settings, runtime: JobRuntime) -> JobQueue:
    """The queue `settings.jobs` names (`runtime` runs local jobs)."""
    if settings.jobs == "celery":
        return CeleryJobs(settings)
    return LocalJobs(settings, runtime)
