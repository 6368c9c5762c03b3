"""A job as the stores keep it (`JobRecord`), as the broker carries it (`JobMessage`), and
the problem document it fails with."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field

from service.problems import PROBLEMS, ProblemSlug
from service.schemas import JobProgress, JobState, ModelRef, Problem, SourceFace

FINISHED: tuple[JobState, ...] = ("succeeded", "failed")


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_job_id() -> str:
    return uuid.uuid4().hex


class JobOutcome(BaseModel):
    """What a finished job made, besides the result itself (kept with the job's record)."""

    model: ModelRef
    width: int
    height: int
    inputs: dict[str, SourceFace] = Field(
        default_factory=dict, description="the face used from each upload"
    )
    media_type: str = Field(
        default="image/png",
        description="what the stored result is: a PNG, or a JSON document (video jobs)",
    )


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
    progress: JobProgress | None = None
    outcome: JobOutcome | None = None
    idempotency: str | None = Field(default=None, description="digest of the Idempotency-Key")
    request_digest: str | None = Field(
        default=None, description="digest of the request (parameters and uploads)"
    )
    owner: str | None = Field(
        default=None, description="the API key's id that may see the job (None: anyone)"
    )

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


class JobMessage(BaseModel):
    """The broker message of a job: its id (uploads and parameters stay in the store)."""

    job_id: str
    kind: str


def job_problem(slug: ProblemSlug, detail: str, job_id: str) -> Problem:
    """The problem document of kind `slug` with which job `job_id` failed."""
    return PROBLEMS[slug].document(detail, instance=f"/jobs/{job_id}")


def idempotency_digest(kind: str, key: str, scope: str = "") -> str:
    """What the stores keep of an Idempotency-Key: a digest, scoped by job kind and by
    caller (`scope`: an API key's id or the client's address), so that two callers never
    share a key."""
    return hashlib.sha256(f"{scope}\0{kind}\0{key}".encode()).hexdigest()


def request_digest(kind: str, params: dict[str, Any], inputs: Mapping[str, bytes]) -> str:
    """A digest of what a job request asks (kind, parameters, every upload), which an
    Idempotency-Key is bound to: the same key with another request is refused."""
    digest = hashlib.sha256(kind.encode())
    digest.update(json.dumps(params, sort_keys=True, default=str).encode())
    for name in sorted(inputs):
        data = inputs[name]
        digest.update(f"\0{name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()
