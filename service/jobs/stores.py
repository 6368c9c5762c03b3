"""Where jobs are kept: `JobStore`, over Redis (`RedisJobStore`, production) or in this
process (`MemoryJobStore`, embedded). A store keeps a job's record, its uploads until it
finishes and its PNG from when it succeeds, each for `job_ttl` seconds."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from service.jobs.celery_config import QUEUE
from service.jobs.records import JobRecord

if TYPE_CHECKING:
    from redis.asyncio import Redis


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
        from redis.asyncio.retry import Retry
        from redis.backoff import ExponentialBackoff
        from redis.exceptions import ConnectionError

        self.url = url
        self.prefix = prefix
        # Fail fast when Redis is down (the gateway answers 503), but ride over one dropped
        # connection with a quick retry; a timeout is not retried (a paused Redis would
        # double the wait).
        self.redis: Redis = Redis.from_url(
            url,
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            retry=Retry(ExponentialBackoff(cap=0.2, base=0.05), 1, (ConnectionError,)),
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
