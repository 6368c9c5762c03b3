"""The `frontalize` job: the frontal view of a face of one upload (pose frontalization)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from pydantic import BaseModel, Field

from service.imaging import DecodedImage
from service.jobs.kinds import JobKind, JobOutput, JobRuntime, Progress, png_size
from service.jobs.records import JobOutcome
from service.schemas import ModelRef


class FrontalizeParams(BaseModel):
    """Parameters of a frontalization."""

    face_index: int = Field(0, ge=0, description="which face of `face` (0 = the largest)")


async def run_frontalize(
    runtime: JobRuntime,
    images: Mapping[str, DecodedImage],
    params: FrontalizeParams,
    progress: Progress,
) -> JobOutput:
    """The frontal view of the face of `face`."""
    entry = runtime.models.require(FRONTALIZE.model, FRONTALIZE.model_kind)
    face = await asyncio.to_thread(
        runtime.pipeline.face, "face", images["face"], params.face_index, entry.input
    )
    generated = await runtime.backend.generate(entry, {"face": face.crop})
    width, height = png_size(generated.image)
    outcome = JobOutcome(
        model=ModelRef(name=entry.name, version=entry.version),
        width=width,
        height=height,
        inputs={"face": face.source},
    )
    return JobOutput(generated.image, outcome)


FRONTALIZE = JobKind(
    name="frontalize",
    model="frontalize",
    model_kind="frontalizer",
    inputs=("face",),
    params=FrontalizeParams,
    run=run_frontalize,
)
