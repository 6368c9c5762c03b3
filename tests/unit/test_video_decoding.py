"""service/video.py on real clips made here with PyAV (tests/conftest.py): containers,
sampling at a rate, limits, and broken or foreign files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from service.problems import ProblemError
from service.video import VideoLimits, probe, sample_frames, sniff_video

DATA = Path(__file__).resolve().parents[1] / "data"
LIMITS = VideoLimits()

Clip = Callable[..., bytes]


def slug(call: Callable[[], object]) -> str:
    with pytest.raises(ProblemError) as caught:
        call()
    return caught.value.kind.slug


@pytest.mark.parametrize("container", ["mp4", "webm", "avi"])
def test_containers(clip: Clip, container: str) -> None:
    data = clip(["astronaut.jpg"], seconds=1.0, rate=10, container=container)
    info = probe(data, LIMITS)
    assert (info.width, info.height) == (320, 240)
    assert info.format == sniff_video(data)
    assert info.duration is not None and abs(info.duration - 1.0) < 0.11
    frames = list(sample_frames(data, 5, LIMITS))
    assert [f.time for f in frames] == [0.0, 0.2, 0.4, 0.6, 0.8]
    assert [f.index for f in frames] == [0, 1, 2, 3, 4]
    assert frames[0].image.mode == "RGB" and frames[0].image.size == (320, 240)


def test_sampling_rates(clip: Clip) -> None:
    data = clip(["blank"], seconds=2.0, rate=10)
    assert len(list(sample_frames(data, 1, LIMITS))) == 2
    assert len(list(sample_frames(data, 2.5, LIMITS))) == 5
    assert len(list(sample_frames(data, 10, LIMITS))) == 20
    assert len(list(sample_frames(data, 30, LIMITS))) == 20  # never more than the clip has


def test_the_shared_clip() -> None:
    data = (DATA / "single_face.mp4").read_bytes()
    info = probe(data, LIMITS)
    assert (info.width, info.height, info.frames, info.codec) == (640, 360, 72, "h264")
    assert len(list(sample_frames(data, 30, LIMITS))) == 72
    assert len(list(sample_frames(data, 5, LIMITS))) == 12


def test_limits(clip: Clip) -> None:
    data = clip(["blank"], seconds=2.0, rate=10)
    assert slug(lambda: probe(data, VideoLimits(max_pixels=320 * 240 - 1))) == "video-too-large"
    assert slug(lambda: probe(data, VideoLimits(max_seconds=1.5))) == "video-too-long"
    assert slug(lambda: probe(data, VideoLimits(max_bytes=len(data) - 1))) == "payload-too-large"


def test_broken_and_foreign_files(clip: Clip) -> None:
    mp4 = clip(["blank"], seconds=1.0)
    assert slug(lambda: probe(b"", LIMITS)) == "invalid-video"
    # an MP4 cut in half (its index is at the end): it starts like one, so it is damaged
    assert slug(lambda: probe(mp4[: len(mp4) // 2], LIMITS)) == "invalid-video"
    # a header and nothing else
    assert slug(lambda: probe(mp4[:64], LIMITS)) == "invalid-video"
    # not videos at all
    assert slug(lambda: probe((DATA / "astronaut.jpg").read_bytes(), LIMITS)) == (
        "unsupported-video"
    )
    assert slug(lambda: probe(b"GIF89a" + bytes(100), LIMITS)) == "unsupported-video"
    assert slug(lambda: probe(b"plain text, not a video at all", LIMITS)) == "unsupported-video"


def test_a_truncated_stream_ends_where_its_data_ends(clip: Clip) -> None:
    webm = clip(["blank"], seconds=2.0, rate=10, container="webm")
    cut = webm[: len(webm) // 2]
    info = probe(cut, LIMITS)
    assert info.duration == pytest.approx(2.0, abs=0.11)  # what the header declares
    frames = list(sample_frames(cut, 10, LIMITS))
    assert 0 < len(frames) < 20
