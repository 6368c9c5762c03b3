"""The `transfer` job: the face of one upload wearing the expression of another (TDGAN)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from pydantic import BaseModel, Field

from service.imaging import DecodedImage
from service.jobs.kinds import JobKind, JobOutput, JobRuntime, Progress, png_size
from service.jobs.records import JobOutcome
from service.schemas import ModelRef


class TransferParams(BaseModel):
    """Parameters of an expression transfer."""

    face_index: int = Field(0, ge=0, description="which face of `face` (0 = the largest)")
    expression_index: int = Field(
        0, ge=0, description="which face of `expression` (0 = the largest)"
    )


async def run_transfer(
    runtime: JobRuntime,
    images: Mapping[str, DecodedImage],
    params: TransferParams,
    progress: Progress,
) -> JobOutput:
    """The face of `face` wearing the expression of the face of `expression`."""
    entry = runtime.models.require(TRANSFER.model, TRANSFER.model_kind)
    face_of = runtime.pipeline.face
    face, expression = await asyncio.gather(
        asyncio.to_thread(face_of, "face", images["face"], params.face_index, entry.input),
        asyncio.to_thread(
            face_of, "expression", images["expression"], params.expression_index, entry.input
        ),
    )
    generated = await runtime.backend.generate(
        entry, {"face": face.crop, "expression": expression.crop}
    )
    width, height = png_size(generated.image)
    outcome = JobOutcome(
        model=ModelRef(name=entry.name, version=entry.version),
        width=width,
        height=height,
        inputs={"face": face.source, "expression": expression.source},
    )
    return JobOutput(generated.image, outcome)


TRANSFER = JobKind(
    name="transfer",
    model="tdgan",
    model_kind="transfer",
    inputs=("face", "expression"),
    params=TransferParams,
    run=run_transfer,
)
