"""Decoding uploaded videos: the gateway's one video decoder (PyAV, whose wheels carry
FFmpeg and its codecs).

`probe` checks an upload before it is queued: the container is sniffed from its first
bytes (MP4/MOV, WebM/Matroska, AVI; anything else is 415 without FFmpeg looking at it),
opened with that demuxer only, and its first video stream is checked against the limits
(pixels per frame, duration) and must decode one frame (else 422). `sample_frames` then
streams the frames of the clip at a chosen rate: FFmpeg reads the upload from memory and
decodes one frame at a time, only sampled frames are converted to RGB, and each is
dropped by the caller before the next is decoded, so memory stays flat in the clip's
length (the upload's bytes, held like any job input, are the only part that grows).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Any

from PIL import Image
from pydantic import BaseModel, Field

from service.problems import ProblemError
from service.settings import Settings

log = logging.getLogger(__name__)

#: FFmpeg demuxer of each container the gateway opens, by the name the API uses.
DEMUXERS = {"MP4/MOV": "mov", "WebM/Matroska": "matroska", "AVI": "avi"}

#: Box types an ISO base media file (MP4, MOV, 3GP) starts with, after the box size.
_ISO_BOXES = (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot")

SUPPORTED = "not an MP4, MOV, WebM (Matroska) or AVI video"


def sniff_video(data: bytes) -> str | None:
    """The container `data` claims to be by its first bytes (a key of `DEMUXERS`)."""
    if data[4:8] in _ISO_BOXES:
        return "MP4/MOV"
    if data.startswith(b"\x1a\x45\xdf\xa3"):
        return "WebM/Matroska"
    if data[:4] == b"RIFF" and data[8:12] == b"AVI ":
        return "AVI"
    return None


@dataclass(frozen=True)
class VideoLimits:
    """Bounds on an uploaded video."""

    max_bytes: int = 64 * 1024 * 1024
    max_seconds: float = 300.0
    max_pixels: int = 3840 * 2160
    max_fps: float = 30.0

    @classmethod
    def from_settings(cls, settings: Settings) -> VideoLimits:
        """The limits `settings` configure (FER_MAX_VIDEO_*, FER_VIDEO_MAX_FPS)."""
        return cls(
            settings.max_video_bytes,
            settings.max_video_seconds,
            settings.max_video_pixels,
            settings.video_max_fps,
        )


class VideoInfo(BaseModel):
    """An uploaded video as its container describes it."""

    format: str = Field(description="the container: MP4/MOV, WebM/Matroska or AVI")
    codec: str = Field(description="the video codec, e.g. h264, vp9, mpeg4")
    width: int
    height: int
    duration: float | None = Field(description="seconds, when the container says")
    frame_rate: float | None = Field(description="frames per second, when the container says")
    frames: int | None = Field(description="frames in the stream, when the container says")


@dataclass(frozen=True)
class SampledFrame:
    """One frame taken from a clip: its number among the sampled frames, its time in
    seconds from the start, and its pixels (RGB)."""

    index: int
    time: float
    image: Image.Image


#: The sampled frames of a clip, decoded as they are taken (`close()` ends the decoding).
Frames = Generator[SampledFrame, None, None]


def _error(exc: BaseException) -> str:
    return str(getattr(exc, "strerror", None) or exc).strip() or type(exc).__name__


def _open(data: bytes, limits: VideoLimits) -> tuple[Any, str]:
    """The opened container and its format name; 413/415/422 problems."""
    import av

    if len(data) > limits.max_bytes:
        raise ProblemError(
            "payload-too-large", f"the video is {len(data)} bytes; the limit is {limits.max_bytes}"
        )
    if not data:
        raise ProblemError("invalid-video", "the video is empty (0 bytes)")
    fmt = sniff_video(data)
    if fmt is None:
        raise ProblemError("unsupported-video", SUPPORTED)
    try:
        container = av.open(io.BytesIO(data), mode="r", format=DEMUXERS[fmt])
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise ProblemError("invalid-video", f"the {fmt} video is damaged: {_error(exc)}") from exc
    if not container.streams.video:
        container.close()
        raise ProblemError("invalid-video", f"the {fmt} file has no video stream")
    return container, fmt


def _describe(container: Any, fmt: str) -> VideoInfo:
    stream = container.streams.video[0]
    duration = None
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = container.duration / 1_000_000  # AV_TIME_BASE
    rate = stream.average_rate or stream.base_rate
    return VideoInfo(
        format=fmt,
        codec=stream.codec_context.name,
        width=int(stream.codec_context.width),
        height=int(stream.codec_context.height),
        duration=round(duration, 3) if duration and duration > 0 else None,
        frame_rate=round(float(rate), 3) if rate else None,
        frames=int(stream.frames) or None,
    )


def _check(info: VideoInfo, limits: VideoLimits) -> None:
    pixels = info.width * info.height
    if pixels > limits.max_pixels:
        raise ProblemError(
            "video-too-large",
            f"the video is {info.width}x{info.height} = {pixels} pixels a frame; the limit "
            f"is {limits.max_pixels}",
        )
    if info.width <= 0 or info.height <= 0:
        raise ProblemError("invalid-video", f"the video is {info.width}x{info.height} pixels")
    if info.duration is not None and info.duration > limits.max_seconds:
        raise ProblemError(
            "video-too-long",
            f"the video lasts {info.duration:.1f} s; the limit is {limits.max_seconds:g} s",
        )


def _frames(container: Any, fmt: str) -> Iterator[Any]:
    """The decoded frames of the first video stream; a decoder error is 422."""
    import av

    stream = container.streams.video[0]
    stream.thread_count = 1  # the job's share of the CPU is one core
    try:
        yield from container.decode(stream)
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise ProblemError("invalid-video", f"the {fmt} video is damaged: {_error(exc)}") from exc


def probe(data: bytes, limits: VideoLimits) -> VideoInfo:
    """Check an uploaded video (see the module docstring) and describe it.

    413 `payload-too-large` (bytes), `video-too-large` (pixels a frame), `video-too-long`
    (declared duration); 415 `unsupported-video`; 422 `invalid-video` (empty, truncated,
    damaged, no video stream, no decodable frame).
    """
    container, fmt = _open(data, limits)
    with container:
        info = _describe(container, fmt)
        _check(info, limits)
        if next(_frames(container, fmt), None) is None:
            raise ProblemError("invalid-video", f"the {fmt} video has no decodable frame")
    return info


def _rotated(frame: Any) -> Image.Image:
    """The frame as upright RGB (phones store portrait clips rotated, with a flag)."""
    image: Image.Image = frame.to_image()
    rotation = int(getattr(frame, "rotation", 0) or 0) % 360
    if rotation:
        image = image.rotate(rotation, expand=True)
    return image


def sample_frames(data: bytes, fps: float, limits: VideoLimits) -> Frames:
    """The frames of the clip `fps` times a second (the first frame at or after each
    multiple of 1/fps; every frame when the clip has fewer), decoded one at a time.

    A clip whose container declares no duration is cut at `limits.max_seconds` with 413
    `video-too-long`; a stream that breaks off mid-way is 422 `invalid-video` when FFmpeg
    reports it, else it ends where the data ends.
    """
    container, fmt = _open(data, limits)
    with container:
        info = _describe(container, fmt)
        _check(info, limits)
        rate = info.frame_rate or 25.0
        step = 1.0 / fps
        due, index = 0.0, 0
        for n, frame in enumerate(_frames(container, fmt)):
            t = float(frame.time) if frame.time is not None else n / rate
            if t > limits.max_seconds:
                raise ProblemError(
                    "video-too-long",
                    f"the video goes on past {limits.max_seconds:g} s, the limit",
                )
            if t + 1e-6 < due:
                continue
            yield SampledFrame(index, round(t, 3), _rotated(frame))
            index += 1
            due += step * max(1, int((t + 1e-6 - due) / step) + 1)
