"""From uploaded bytes to aligned face crops: decode -> detect -> align, in one place.

`/classify` (`FacePipeline.analyse`: every face, largest first) and the queued jobs
(`FacePipeline.decode_upload` then `FacePipeline.face`: one face of a named upload; for a
video, `FacePipeline.probe_video`, then its frames streamed through `detect`) run the same
steps with the same decoders, detector and aligner; `located` turns a detection into the
box, landmarks and score that the response schemas carry.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from PIL import Image

from service.archive import InputSpec
from service.faces import LANDMARKS, Detection, FaceDetector, crops_for
from service.imaging import DecodedImage, ImageLimits, decode
from service.pose import estimate_yaw
from service.problems import ProblemError
from service.schemas import Box, ImageInfo, Landmarks, Point, SourceFace
from service.settings import Settings
from service.video import VideoInfo, VideoLimits, probe

#: What a job's uploads are: images, or videos.
Media = Literal["image", "video"]


@dataclass(frozen=True)
class ProbedVideo:
    """An uploaded video, checked (`service.video.probe`): its bytes and its description.
    Its frames are decoded by the job, one at a time."""

    data: bytes
    info: VideoInfo


#: An upload made ready for its job.
Decoded = DecodedImage | ProbedVideo


@dataclass(frozen=True)
class Located:
    """Where a face is, as the response schemas report it (image pixels, rounded)."""

    box: Box
    landmarks: Landmarks
    score: float
    yaw: float


def located(detection: Detection) -> Located:
    """The box, 5 landmarks and detection score of `detection`, rounded for responses."""
    x1, y1, x2, y2 = (round(v, 1) for v in detection.box)
    points = {
        name: Point(x=round(float(x), 1), y=round(float(y), 1))
        for name, (x, y) in zip(LANDMARKS, detection.landmarks, strict=True)
    }
    return Located(
        box=Box(x=x1, y=y1, width=round(x2 - x1, 1), height=round(y2 - y1, 1)),
        landmarks=Landmarks(**points),
        score=round(detection.score, 4),
        yaw=round(estimate_yaw(detection.landmarks), 1),
    )


def image_info(image: DecodedImage) -> ImageInfo:
    """What the responses say about a decoded upload."""
    return ImageInfo(width=image.width, height=image.height, format=image.format)


@dataclass
class Analysis:
    """The CPU-bound part of a /classify request: decoded image, faces and their crops.

    `faces` are in the coordinates of the image file (what responses report), `detected`
    the same faces in those of `image.image` (what crops are cut from)."""

    image: DecodedImage
    faces: list[Detection]
    crops: list[np.ndarray]
    timings: dict[str, float]
    spec: InputSpec
    detected: list[Detection]

    def crops_as(self, spec: InputSpec, indices: Sequence[int]) -> list[np.ndarray]:
        """The crops of faces `indices` aligned as `spec` describes (the analysed crops
        themselves when `spec` is the one they were made with)."""
        if spec == self.spec:
            return [self.crops[i] for i in indices]
        return crops_for(self.image.image, [self.detected[i] for i in indices], spec)


@dataclass(frozen=True)
class AlignedFace:
    """One face of an upload, aligned to a model's input crop."""

    crop: np.ndarray
    source: SourceFace


@dataclass(frozen=True)
class FacePipeline:
    """The decoder's limits and the face detector, shared by the routes and the jobs."""

    limits: ImageLimits
    detector: FaceDetector
    decode_min_side: int | None = None
    video: VideoLimits = field(default_factory=VideoLimits)

    @classmethod
    def from_settings(cls, settings: Settings, detector: FaceDetector) -> FacePipeline:
        """The pipeline `settings` configure, around `detector`."""
        return cls(
            ImageLimits.from_settings(settings),
            detector,
            settings.decode_min_side,
            VideoLimits.from_settings(settings),
        )

    def max_bytes(self, media: Media) -> int:
        """The byte limit of one upload of `media`."""
        return self.video.max_bytes if media == "video" else self.limits.max_bytes

    def probe_video(self, name: str, data: bytes) -> ProbedVideo:
        """Check the video upload `name`; its 4xx problems name it in their detail."""
        try:
            return ProbedVideo(data, probe(data, self.video))
        except ProblemError as exc:
            raise ProblemError(exc.kind.slug, f"the {name} upload: {exc.detail}") from exc

    def prepare(self, media: Media, uploads: Mapping[str, bytes]) -> dict[str, Decoded]:
        """Every named upload made ready for its job: images decoded, videos probed."""
        if media == "video":
            return {name: self.probe_video(name, data) for name, data in uploads.items()}
        return dict(self.decode_uploads(uploads))

    def detect(self, image: DecodedImage, min_face: int | None = None) -> list[Detection]:
        """The faces of `image` (in the coordinates of `image.image`), largest first;
        `min_face`: the smallest face to find, in pixels of the image file (default: the
        detector's own)."""
        if min_face is not None:  # in pixels of the decoded (perhaps reduced) image
            min_face = max(1, round(min_face / image.scale))
        return self.detect_frame(image.image, min_face)

    def detect_frame(self, image: Image.Image, min_face: int | None = None) -> list[Detection]:
        """The faces of an RGB image (a decoded photo, a video frame), largest first, down
        to `min_face` pixels (default: the detector's own)."""
        faces = self.detector.detect(image, min_face)
        return sorted(faces, key=lambda f: f.area, reverse=True)

    def analyse(
        self, data: bytes, spec: InputSpec, max_faces: int, min_face: int | None = None
    ) -> Analysis:
        """Decode, detect (keeping the `max_faces` largest faces, finding faces down to
        `min_face` pixels) and align, timing each step. `faces` are in the coordinates of
        the image file, whatever scale it was decoded at."""
        t0 = time.perf_counter()
        image = decode(data, self.limits, self.decode_min_side)
        t1 = time.perf_counter()
        faces = self.detect(image, min_face)[:max_faces]
        t2 = time.perf_counter()
        crops = crops_for(image.image, faces, spec)
        t3 = time.perf_counter()
        timings = {"decode": t1 - t0, "detect": t2 - t1, "align": t3 - t2}
        scaled = [f.scaled(image.scale) for f in faces]
        return Analysis(image, scaled, crops, timings, spec, faces)

    def decode_upload(self, name: str, data: bytes) -> DecodedImage:
        """Decode the upload `name`; its 4xx problems name it in their detail."""
        try:
            return decode(data, self.limits, self.decode_min_side)
        except ProblemError as exc:
            raise ProblemError(exc.kind.slug, f"the {name} image: {exc.detail}") from exc

    def decode_uploads(self, uploads: Mapping[str, bytes]) -> dict[str, DecodedImage]:
        """Decode every named upload (see `decode_upload`)."""
        return {name: self.decode_upload(name, data) for name, data in uploads.items()}

    def face(self, name: str, image: DecodedImage, index: int, spec: InputSpec) -> AlignedFace:
        """Face number `index` (largest first, as /classify orders them) of the upload
        `name`, aligned to the crop `spec` describes; 422 `no-face` if there is none."""
        faces = self.detect(image)
        if index >= len(faces):
            found = f"{len(faces)} face{'' if len(faces) == 1 else 's'}" if faces else "no face"
            what = f"; {name}_index {index} is out of range" if faces else ""
            raise ProblemError("no-face", f"the {name} image has {found}{what}")
        face = faces[index]
        crop = crops_for(image.image, [face], spec)[0]
        where = located(face.scaled(image.scale))
        source = SourceFace(
            image=image_info(image),
            faces_found=len(faces),
            index=index,
            box=where.box,
            landmarks=where.landmarks,
            score=where.score,
        )
        return AlignedFace(crop, source)
