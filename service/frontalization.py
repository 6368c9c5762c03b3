"""Frontalize-then-classify, the step `/classify?frontalize=true` adds.

The faces whose estimated yaw (`service.pose`) is at least a threshold are aligned to the
frontalizer's own input crop, turned to their frontal view by the `frontalize` archive
(`InferenceBackend.generate`, one request per face, all at once: TorchServe batches them)
and the generated faces become the classifier's input crops in place of the turned ones.

A frontalizer returns its face in the framing it was trained on (its `input.framing`), so
its output is the classifier's crop after a resize (and a colour conversion) only when
both models use the same framing. Re-framing a generated face is not done: the generated
image holds nothing beyond its own crop, so a looser framing would need pixels that do not
exist. A classifier framed otherwise is refused with 422 `invalid-request` (and logged at
startup by `log_framings`), never given a mis-framed face.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from service.archive import InputSpec
from service.catalog import ModelEntry, ModelStore
from service.inference import InferenceBackend
from service.jobs.frontalize import FRONTALIZE
from service.pipeline import Analysis
from service.problems import BackendError, ProblemError
from service.schemas import Generation

log = logging.getLogger(__name__)


def frontalizer_for(models: ModelStore, classifier: ModelEntry) -> ModelEntry:
    """The frontalizer that can feed `classifier`: 503 `model-not-ready` when the store has
    none (as `/frontalize`), 422 `invalid-request` when its crops are framed otherwise."""
    entry = models.require(FRONTALIZE.model, FRONTALIZE.model_kind)
    if entry.input.framing != classifier.input.framing:
        raise ProblemError(
            "invalid-request",
            f"frontalize=true cannot feed model '{classifier.name}': its crops are framed "
            f"as '{classifier.input.framing}', the frontalizer's as '{entry.input.framing}'",
        )
    return entry


def log_framings(models: ModelStore) -> None:
    """Warn, at startup, of every classifier that `frontalize=true` cannot serve."""
    frontalizer = models.entries.get(FRONTALIZE.model)
    if frontalizer is None or frontalizer.kind != FRONTALIZE.model_kind:
        return
    for entry in models:
        if entry.is_classifier and entry.input.framing != frontalizer.input.framing:
            log.warning(
                "classify?frontalize=true refuses model %s: framed as %r, the frontalizer as %r",
                entry.name,
                entry.input.framing,
                frontalizer.input.framing,
            )


def turned(yaws: Sequence[float], min_yaw: float) -> list[int]:
    """Indices of the faces to frontalize: those whose |yaw| is at least `min_yaw`."""
    return [i for i, yaw in enumerate(yaws) if abs(yaw) >= min_yaw]


def classifier_crop(png: bytes, spec: InputSpec) -> np.ndarray:
    """A generated face (PNG, in the classifier's framing) as the classifier's input crop:
    its colour (gray or RGB) at its size; a backend error if it is not a square PNG."""
    try:
        with Image.open(io.BytesIO(png), formats=["PNG"]) as image:
            image.load()
            face = image.convert("L" if spec.color == "gray" else "RGB")
    except Exception as exc:  # noqa: BLE001 - the model's output, not the client's input
        raise BackendError(f"the frontalizer returned an image that is not a PNG: {exc}") from exc
    if face.width != face.height:
        raise BackendError(
            f"the frontalizer returned a {face.width}x{face.height} image, not a square crop"
        )
    if face.width != spec.size:
        face = face.resize((spec.size, spec.size), Image.Resampling.BILINEAR)
    return np.asarray(face)


@dataclass(frozen=True)
class Frontalized:
    """The classifier's crops of an analysis, the turned faces frontalized."""

    crops: list[np.ndarray]
    #: Whether each face (by index) was frontalized.
    frontalized: list[bool]


async def frontalize_turned(
    backend: InferenceBackend,
    frontalizer: ModelEntry,
    classifier: ModelEntry,
    analysis: Analysis,
    indices: Sequence[int],
) -> Frontalized:
    """`analysis.crops` (the classifier's) with the faces `indices` replaced by their
    frontal views, generated concurrently."""
    crops = list(analysis.crops)
    marks = [False] * len(crops)
    if not indices:
        return Frontalized(crops, marks)
    inputs = await asyncio.to_thread(analysis.crops_as, frontalizer.input, indices)
    results = await asyncio.gather(
        *(backend.generate(frontalizer, {"face": crop}) for crop in inputs),
        return_exceptions=True,
    )
    generated: list[Generation] = []
    for r in results:
        if isinstance(r, BaseException):
            raise r
        generated.append(r)
    fronts = await asyncio.to_thread(
        lambda: [classifier_crop(g.image, classifier.input) for g in generated]
    )
    for i, front in zip(indices, fronts, strict=True):
        crops[i] = front
        marks[i] = True
    return Frontalized(crops, marks)
