"""What a kind of job is (`JobKind`) and what it runs with (`JobRuntime`).

A `JobKind` names the uploads it takes and what they are (`media`: images, or a video),
its parameters (a pydantic model) and an async `run` that turns them, decoded (images) or
probed (a video, which `run` streams itself), into its result: a PNG, or a JSON document
(`JobOutput.media_type`). The machinery around it (queueing, state, retries, TTLs,
results, progress) is the same for every kind (`execution`, `queues`); it runs `run` in a
Celery worker (service/worker.py) or in the gateway's own pool (`LocalJobs`).

Adding a kind (e.g. `frontalize`: one `face` image, the `frontalize` model) is a module
like `transfer` (a params model and a `run` that calls `FacePipeline.face` and
`JobRuntime.backend.generate`) listed in `registry.KINDS`, plus its route.
"""

from __future__ import annotations

import io
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from PIL import Image
from pydantic import BaseModel

from service.catalog import ModelEntry, ModelStore
from service.inference import InferenceBackend
from service.jobs.records import JobOutcome
from service.metrics import Metrics
from service.pipeline import FacePipeline, Media
from service.problems import BackendError
from service.settings import Settings

#: How a running job reports how far it is: `await progress(done, total)`.
Progress = Callable[[int, int | None], Awaitable[None]]


async def no_progress(done: int, total: int | None) -> None:
    """A `Progress` that reports nowhere."""


@dataclass
class JobRuntime:
    """What a job runs with: settings, the model store, the face pipeline and the inference
    backend (the same model store and pipeline objects the gateway's routes use)."""

    settings: Settings
    models: ModelStore
    pipeline: FacePipeline
    backend: InferenceBackend
    #: Where finished jobs are timed: the gateway's metrics, or a worker's own.
    metrics: Metrics | None = None


@dataclass(frozen=True)
class JobOutput:
    """The result of a job's `run`: the PNG (or JSON document, as `outcome.media_type`
    says) and its description."""

    image: bytes
    outcome: JobOutcome


@dataclass(frozen=True)
class JobKind:
    """A kind of queued job."""

    name: str
    #: The archive it runs, by name, and the kind that archive must be.
    model: str
    model_kind: str
    #: Names of the uploads (multipart fields) it takes.
    inputs: tuple[str, ...]
    params: type[BaseModel]
    #: The job itself: its uploads (decoded, by name), parameters and a progress callback
    #: to its result.
    run: Callable[[JobRuntime, Mapping[str, Any], Any, Progress], Awaitable[JobOutput]]
    #: What the uploads are: images (decoded before queueing) or videos (probed).
    media: Media = "image"
    #: The archive a job of these parameters runs, checked before it is queued (503, 404
    #: or 422 then rather than a failed job); None: `model`, which must be a `model_kind`.
    choose: Callable[[ModelStore, Any], ModelEntry] | None = None

    def entry(self, models: ModelStore, params: BaseModel) -> ModelEntry:
        """The archive a job of `params` runs (see `choose`)."""
        if self.choose is not None:
            return self.choose(models, params)
        return models.require(self.model, self.model_kind)


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height of a generated PNG; a backend error if it is not one."""
    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as image:
            return image.size
    except Exception as exc:  # noqa: BLE001 - the model's output, not the client's input
        raise BackendError(f"the model returned an image that is not a PNG: {exc}") from exc
