"""The `video` job: the face tracks of a clip and their expressions (`POST /classify/video`).

The clip is streamed (service/video.py): frames sampled `fps` times a second are decoded
one at a time, a batch of `FER_VIDEO_BATCH` frames at a time goes through the face
detector and aligner in a thread, all the faces of a batch go to the frame classifier in
one `InferenceBackend.predict`, and the faces are linked into tracks (service/tracking.py).
Only the per-frame results and, per track, a bounded sample of its face crops are kept, so
memory does not grow with the clip's length beyond its results. Each track is then
labelled by the `sequence` archive (the frame-to-sequence model over its crops) when the
model store has one, else by the mean of its frame probabilities; the result says which.
Progress (sampled frames analysed / expected) is reported after every batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, Field

from service.archive import InputSpec
from service.catalog import ModelEntry, ModelStore
from service.faces import Detection, crops_for
from service.jobs.kinds import JobKind, JobOutput, JobRuntime, Progress
from service.jobs.records import JobOutcome
from service.pipeline import FacePipeline, ProbedVideo, located
from service.schemas import ModelRef, Prediction
from service.tracking import Tracker
from service.video import Frames, VideoInfo, sample_frames
from service.video_schemas import FrameFaces, LabelSource, Track, TrackFrame, VideoAnalysis

#: The archive that labels tracks, when the store has it, and its kind.
SEQUENCE_MODEL, SEQUENCE_KIND = "sequence", "sequence"

#: Crops of a track kept for the sequence model: between this and twice this many, evenly
#: spread over the track (every other one is dropped when the buffer fills).
SEQUENCE_CROPS = 64


class VideoParams(BaseModel):
    """Parameters of a video job."""

    fps: float = Field(5.0, gt=0, description="frames sampled per second of video")
    model: str | None = Field(None, description="the frame classifier (default: the default)")
    max_faces: int = Field(5, ge=1, description="faces per frame followed, the largest")


def choose_classifier(models: ModelStore, params: VideoParams) -> ModelEntry:
    """The frame classifier a job of `params` runs (404, 422 or 503 problems)."""
    return models.classifier(params.model)


def sequence_model(models: ModelStore) -> ModelEntry | None:
    """The sequence model of the store, if it has one."""
    entry = models.entries.get(SEQUENCE_MODEL)
    return entry if entry is not None and entry.kind == SEQUENCE_KIND else None


@dataclass
class _Builder:
    """A track being built: its frames, the sum of their probabilities, and a decimated
    buffer of crops for the sequence model."""

    id: int
    frames: list[TrackFrame] = field(default_factory=list)
    total: np.ndarray | None = None
    crops: list[np.ndarray] = field(default_factory=list)
    stride: int = 1
    seen: int = 0

    def add(self, frame: TrackFrame, crop: np.ndarray | None, classes: list[str]) -> None:
        self.frames.append(frame)
        probs = np.array([frame.probabilities[c] for c in classes])
        self.total = probs if self.total is None else self.total + probs
        if crop is not None and self.seen % self.stride == 0:
            self.crops.append(crop)
            if len(self.crops) >= 2 * SEQUENCE_CROPS:
                self.crops, self.stride = self.crops[::2], self.stride * 2
        self.seen += 1


@dataclass
class _Batch:
    """Sampled frames analysed together: each one's number and time, its faces and their
    crops by input spec (the frames' pixels are not kept)."""

    frames: list[tuple[int, float]] = field(default_factory=list)
    faces: list[list[Detection]] = field(default_factory=list)
    crops: list[dict[str, list[np.ndarray]]] = field(default_factory=list)


def _key(spec: InputSpec) -> str:
    return f"{spec.size}/{spec.color}/{spec.framing}"


def _analyse(
    frames: Frames,
    pipeline: FacePipeline,
    specs: list[InputSpec],
    max_faces: int,
    size: int,
) -> _Batch:
    """Decode, detect and align the next `size` sampled frames (in a worker thread)."""
    batch = _Batch()
    for sampled in frames:
        faces = pipeline.detect_frame(sampled.image)[:max_faces]
        batch.crops.append({_key(s): crops_for(sampled.image, faces, s) for s in specs})
        batch.frames.append((sampled.index, sampled.time))
        batch.faces.append(faces)
        if len(batch.frames) >= size:
            break
    return batch


def expected_frames(info: VideoInfo, fps: float) -> int | None:
    """Sampled frames a clip should give, when its container declares its length."""
    if info.duration is None:
        return None
    sampled = math.ceil(info.duration * fps - 1e-6)
    return min(sampled, info.frames) if info.frames else sampled


def _mean(total: np.ndarray, n: int, classes: list[str]) -> dict[str, float]:
    row = total / max(n, 1)
    row = row / row.sum()
    return {c: round(float(p), 4) for c, p in zip(classes, row, strict=True)}


async def run_video(
    runtime: JobRuntime, inputs: Mapping[str, ProbedVideo], params: VideoParams, progress: Progress
) -> JobOutput:
    """The tracks of the clip `video` and their expressions (see the module docstring)."""
    classifier = choose_classifier(runtime.models, params)
    sequence = sequence_model(runtime.models)
    upload = inputs["video"]
    specs = [classifier.input] + ([sequence.input] if sequence else [])
    limits = runtime.pipeline.video
    fps = min(params.fps, limits.max_fps)
    total = expected_frames(upload.info, fps)
    frames = sample_frames(upload.data, fps, limits)
    tracker = Tracker(max_gap=max(1.0, 2.5 / fps))
    builders: dict[int, _Builder] = {}
    sampled: list[FrameFaces] = []
    classes = classifier.classes
    try:
        while True:
            batch = await asyncio.to_thread(
                _analyse,
                frames,
                runtime.pipeline,
                specs,
                params.max_faces,
                runtime.settings.video_batch,
            )
            if not batch.frames:
                break
            crops = [c for per in batch.crops for c in per[_key(classifier.input)]]
            predictions = iter(await runtime.backend.predict(classifier, crops))
            for (index, time), faces, per in zip(
                batch.frames, batch.faces, batch.crops, strict=True
            ):
                ids = tracker.update(time, faces)
                sampled.append(FrameFaces(index=index, time=time, tracks=ids))
                kept = per[_key(sequence.input)] if sequence else [None] * len(faces)
                for face, track_id, crop in zip(faces, ids, kept, strict=True):
                    builder = builders.setdefault(track_id, _Builder(track_id))
                    frame = _track_frame(index, time, face, next(predictions))
                    builder.add(frame, crop, classes)
            await progress(len(sampled), total)
    finally:
        # Close the container wherever the job stopped; a batch still decoding in its
        # thread (the job timed out) keeps the generator busy: it closes when collected.
        with contextlib.suppress(ValueError):
            frames.close()
    tracks = [await _track(runtime, b, sequence, classes) for b in builders.values()]
    info = upload.info
    last = sampled[-1].time if sampled else 0.0
    complete = info.duration is None or last + max(2.0 / fps, 1.0) >= info.duration
    source: LabelSource = "sequence" if sequence else "mean"
    analysis = VideoAnalysis(
        video=info,
        fps=fps,
        model=ModelRef(name=classifier.name, version=classifier.version),
        sequence_model=ModelRef(name=sequence.name, version=sequence.version) if sequence else None,
        label_source=source,
        complete=complete,
        frames=sampled,
        tracks=tracks,
    )
    outcome = JobOutcome(
        model=analysis.model, width=info.width, height=info.height, media_type="application/json"
    )
    return JobOutput(analysis.model_dump_json().encode(), outcome)


def _track_frame(index: int, time: float, face: Detection, prediction: Prediction) -> TrackFrame:
    where = located(face)
    probabilities = {c: round(p, 4) for c, p in prediction.probabilities.items()}
    return TrackFrame(
        frame=index,
        time=time,
        box=where.box,
        score=where.score,
        expression=prediction.label,
        probabilities=probabilities,
    )


async def _track(
    runtime: JobRuntime, builder: _Builder, sequence: ModelEntry | None, classes: list[str]
) -> Track:
    """The finished track: labelled by the sequence model, or by its mean probabilities."""
    assert builder.total is not None
    probabilities = _mean(builder.total, len(builder.frames), classes)
    source: LabelSource = "mean"
    if sequence is not None and builder.crops:
        answer = await runtime.backend.classify_sequence(sequence, builder.crops)
        probabilities = {c: round(p, 4) for c, p in answer.probabilities.items()}
        source = "sequence"
    return Track(
        id=builder.id,
        start=builder.frames[0].time,
        end=builder.frames[-1].time,
        expression=max(probabilities, key=lambda c: probabilities[c]),
        probabilities=probabilities,
        label_source=source,
        frames=builder.frames,
    )


VIDEO = JobKind(
    name="video",
    model=SEQUENCE_MODEL,
    model_kind=SEQUENCE_KIND,
    inputs=("video",),
    params=VideoParams,
    run=run_video,
    media="video",
    choose=choose_classifier,
)
