"""What a queued job does, by kind: the registry `KINDS` and the `transfer` kind.

A `JobKind` names the uploaded images it takes, its parameters (a pydantic model) and an
async `run` that turns them into a PNG. The machinery around it (queueing, state, retries,
TTLs, results) is in `service/jobs.py` and is the same for every kind; it runs `run` in a
Celery worker (`service/worker.py`) or in the gateway's own pool (`LocalJobs`), with a
`JobRuntime`: the face detector, the inference backend and the model store.

Adding a kind (e.g. `frontalize`: one `face` image, the `frontalize` model) is a params
model, a `run` that calls `source_face` and `JobRuntime.backend.generate`, and a
`register(JobKind(...))` line, plus its route.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image
from pydantic import BaseModel, Field

from service.catalog import ModelEntry
from service.errors import ProblemError
from service.faces import LANDMARKS, Detection, FaceDetector, crops_for
from service.imaging import ImageLimits, decode
from service.schemas import Box, ImageInfo, Landmarks, ModelRef, Point, SourceFace
from service.settings import Settings

if TYPE_CHECKING:
    from service.inference import InferenceBackend


@dataclass
class JobRuntime:
    """What a job runs with: settings, model store, face detector and inference backend."""

    settings: Settings
    catalog: dict[str, ModelEntry]
    detector: FaceDetector
    backend: InferenceBackend

    @property
    def limits(self) -> ImageLimits:
        return ImageLimits(self.settings.max_upload_bytes, self.settings.max_pixels)

    def model(self, name: str, kind: str) -> ModelEntry:
        """The archive `name`, which must be of `kind`; else 503 `model-not-ready`."""
        entry = self.catalog.get(name)
        if entry is None:
            raise ProblemError(
                "model-not-ready",
                f"the model store has no '{name}' archive, which {kind} jobs need",
                retry_after=self.settings.retry_after,
            )
        if entry.kind != kind:
            raise ProblemError(
                "model-not-ready",
                f"the archive '{name}' is a {entry.kind} model, not a {kind} model",
                retry_after=self.settings.retry_after,
            )
        return entry


class JobOutcome(BaseModel):
    """What a finished job made, besides the image itself (kept with the job's record)."""

    model: ModelRef
    width: int
    height: int
    inputs: dict[str, SourceFace] = Field(description="the face used from each upload")


@dataclass(frozen=True)
class JobOutput:
    """The result of a job's `run`: the PNG and its description."""

    image: bytes
    outcome: JobOutcome


@dataclass(frozen=True)
class JobKind:
    """A kind of queued job."""

    name: str
    #: The archive it runs, by name, and the kind that archive must be.
    model: str
    model_kind: str
    #: Names of the uploaded images (multipart fields) it takes.
    inputs: tuple[str, ...]
    params: type[BaseModel]
    run: Callable[[JobRuntime, Mapping[str, bytes], Any], Awaitable[JobOutput]]


#: Every kind of job, by name.
KINDS: dict[str, JobKind] = {}


def register(kind: JobKind) -> JobKind:
    """Add `kind` to `KINDS`."""
    if kind.name in KINDS:
        raise ValueError(f"job kind {kind.name!r} is already registered")
    KINDS[kind.name] = kind
    return kind


# -- shared steps -----------------------------------------------------------------------------


@dataclass(frozen=True)
class AlignedFace:
    """One face of an upload, aligned to a model's input crop."""

    crop: np.ndarray
    source: SourceFace


def _source(detection: Detection, image: ImageInfo, found: int, index: int) -> SourceFace:
    x1, y1, x2, y2 = (round(v, 1) for v in detection.box)
    points = {
        name: Point(x=round(float(x), 1), y=round(float(y), 1))
        for name, (x, y) in zip(LANDMARKS, detection.landmarks, strict=True)
    }
    return SourceFace(
        image=image,
        faces_found=found,
        index=index,
        box=Box(x=x1, y=y1, width=round(x2 - x1, 1), height=round(y2 - y1, 1)),
        landmarks=Landmarks(**points),
        score=round(detection.score, 4),
    )


def align_face(
    runtime: JobRuntime, name: str, data: bytes, index: int, model: ModelEntry
) -> AlignedFace:
    """Decode the upload `name`, find its faces (largest first, as /classify orders them)
    and align face number `index` to `model`'s input crop.

    4xx problems (damaged image, no such face) name the upload in their detail.
    """
    try:
        image = decode(data, runtime.limits, runtime.settings.decode_min_side)
    except ProblemError as exc:
        raise ProblemError(exc.kind.slug, f"the {name} image: {exc.detail}") from exc
    faces = sorted(
        runtime.detector.detect(np.asarray(image.image)), key=lambda f: f.area, reverse=True
    )
    if index >= len(faces):
        found = f"{len(faces)} face{'' if len(faces) == 1 else 's'}" if faces else "no face"
        what = f"; {name}_index {index} is out of range" if faces else ""
        raise ProblemError("no-face", f"the {name} image has {found}{what}")
    face = faces[index]
    crop = crops_for(image.image, [face], model.input)[0]
    info = ImageInfo(width=image.width, height=image.height, format=image.format)
    return AlignedFace(crop, _source(face.scaled(image.scale), info, len(faces), index))


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height of a generated PNG; a backend error if it is not one."""
    from service.inference import BackendError

    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as image:
            return image.size
    except Exception as exc:  # noqa: BLE001 - the model's output, not the client's input
        raise BackendError(f"the model returned an image that is not a PNG: {exc}") from exc


# -- transfer ---------------------------------------------------------------------------------


class TransferParams(BaseModel):
    """Parameters of an expression transfer."""

    face_index: int = Field(0, ge=0, description="which face of `face` (0 = the largest)")
    expression_index: int = Field(
        0, ge=0, description="which face of `expression` (0 = the largest)"
    )


async def run_transfer(
    runtime: JobRuntime, images: Mapping[str, bytes], params: TransferParams
) -> JobOutput:
    """The face of `face` wearing the expression of the face of `expression` (TDGAN)."""
    entry = runtime.model(TRANSFER.model, TRANSFER.model_kind)
    face, expression = await asyncio.gather(
        asyncio.to_thread(align_face, runtime, "face", images["face"], params.face_index, entry),
        asyncio.to_thread(
            align_face,
            runtime,
            "expression",
            images["expression"],
            params.expression_index,
            entry,
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


TRANSFER = register(
    JobKind(
        name="transfer",
        model="tdgan",
        model_kind="transfer",
        inputs=("face", "expression"),
        params=TransferParams,
        run=run_transfer,
    )
)
