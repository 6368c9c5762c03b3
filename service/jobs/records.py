"""A job as the stores keep it (`JobRecord`), as the broker carries it (`JobMessage`), and
the problem document it fails with."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field

from service.problems import PROBLEMS, ProblemSlug
from service.schemas import JobState, ModelRef, Problem, SourceFace

FINISHED: tuple[JobState, ...] = ("succeeded", "failed")


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_job_id() -> str:
    return uuid.uuid4().hex


class JobOutcome(BaseModel):
    """What a finished job made, besides the image itself (kept with the job's record)."""

    model: ModelRef
    width: int
    height: int
    inputs: dict[str, SourceFace] = Field(description="the face used from each upload")


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


def job_problem(slug: ProblemSlug, detail: str, job_id: str) -> Problem:
    """The problem document of kind `slug` with which job `job_id` failed."""
    return PROBLEMS[slug].document(detail, instance=f"/jobs/{job_id}")


def idempotency_digest(kind: str, key: str) -> str:
    """What the stores keep of an Idempotency-Key: a digest, scoped by job kind."""
    return hashlib.sha256(f"{kind}\0{key}".encode()).hexdigest()
