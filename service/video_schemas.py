"""Pydantic models of a video job's result (`POST /classify/video`): the face tracks of a
clip, each with its per-frame expression probabilities and one label for the track."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from service.schemas import PROBABILITIES_EXAMPLE, Box, ModelRef
from service.video import VideoInfo

#: Where a track's label comes from: the sequence model over the track's frames, or the
#: mean of the frame classifier's probabilities (when the store has no sequence model).
LabelSource = Literal["sequence", "mean"]


class TrackFrame(BaseModel):
    """One face of a track in one sampled frame."""

    frame: int = Field(ge=0, description="the sampled frame (see `frames`)")
    time: float = Field(description="seconds from the start of the clip")
    box: Box
    score: float = Field(ge=0, le=1, description="face detection confidence")
    expression: str = Field(description="the frame classifier's most probable expression")
    probabilities: dict[str, float] = Field(examples=[PROBABILITIES_EXAMPLE])


class Track(BaseModel):
    """One face followed over time, and its expression."""

    id: int = Field(ge=1, description="tracks are numbered from 1 in order of appearance")
    start: float = Field(description="seconds: the first frame the face is in")
    end: float = Field(description="seconds: the last frame the face is in")
    expression: str = Field(description="the track's label")
    probabilities: dict[str, float] = Field(description="the track's class probabilities")
    label_source: LabelSource
    frames: list[TrackFrame]


class FrameFaces(BaseModel):
    """One sampled frame: when it is and which tracks it has (empty: no face)."""

    index: int = Field(ge=0)
    time: float
    tracks: list[int]


class VideoAnalysis(BaseModel):
    """What a video job finds: what the job stores as its result."""

    video: VideoInfo
    fps: float = Field(description="the sampling rate asked for (frames a second)")
    model: ModelRef = Field(description="the frame classifier")
    sequence_model: ModelRef | None = Field(
        description="the sequence model that labelled the tracks (none: the mean of the "
        "frame probabilities did)"
    )
    label_source: LabelSource
    complete: bool = Field(
        description="false when the stream ended well before the duration its container "
        "declares (a truncated file)"
    )
    frames: list[FrameFaces] = Field(description="every sampled frame, in order")
    tracks: list[Track]


class VideoResult(VideoAnalysis):
    """The result of a video job, as JSON (`GET /jobs/{id}/result`); `?format=png` draws
    it as a timeline of each track's expressions instead."""

    id: str
    kind: Literal["video"] = "video"
    timeline_url: str = Field(description="the timeline picture (PNG) of this result")
    created_at: datetime
    finished_at: datetime
