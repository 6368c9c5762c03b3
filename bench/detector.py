"""Recall and speed of the face detector per setting (FER_DETECTOR_MIN_FACE, threads): the
median of a detection alone, and the time per detection of two detecting at once.

Scenes, with the faces every setting must find:
- `multi_face` (tests/data, 800x534) and the shared `multi_face.jpg` (1000x667): 5 real
  faces each, the reference boxes found on the full-resolution photo;
- `group_1280x886`: 6 faces of 60-110 px on a 1280x886 canvas (composite: no real group
  photo of that size is available here; faces pasted from the real photos below);
- `frame_1080p_<N>px`: a real 1920x1080 frame without faces (shared `no_face.jpg`) with 8
  real faces pasted at N pixels wide (N = 24, 32, 40, 48, 64): what a video frame with
  small faces asks of the detector.
Pasted faces come from `astronaut`, `grace_hopper`, `single_face` and the 5 faces of
`multi_face` (whole photo regions around each face, scaled), so each has context and a
known box: the full-resolution detection of its source, scaled and shifted. A face counts
as found when a detection overlaps its box with IoU >= 0.4. `other_detections` are
detections matching no listed face: mostly real neighbouring faces that a pasted
`multi_face` region brings along at its edge, so not all are false positives.

    python -m bench.detector [--repeat 20]

Saves `bench/results/detector.json`.
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image

from bench.common import ROOT, save
from service.faces import RELIABLE_FACE_PX, RetinaFaceDetector, reduction

SHARED = ROOT.parent / "shared" / "images"
TESTS = ROOT / "tests" / "data"
SMALL_FACES = (24, 32, 40, 48, 64)
# (min_face, threads); threads 0: every core for a detection alone, one thread for one that
# starts while another runs (the default)
SETTINGS = [(24, 1), (40, 1), (40, 0), (48, 1), (48, 0), (72, 1), (72, 0), (96, 1)]


@dataclass
class Scene:
    name: str
    image: Image.Image
    boxes: np.ndarray  # [F, 4] x1, y1, x2, y2


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of `a` [A, 4] with every box of `b` [B, 4]: [A, B]."""
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda r: (r[:, 2] - r[:, 0]) * (r[:, 3] - r[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def reference(detector: RetinaFaceDetector, image: Image.Image) -> np.ndarray:
    """Boxes found at full resolution (no reduction)."""
    return np.array([f.box for f in detector.detect(image)], dtype=np.float64).reshape(-1, 4)


def face_patches(full: RetinaFaceDetector) -> list[tuple[Image.Image, np.ndarray]]:
    """Real faces with context: (patch, face box in the patch), the patch 2.4x the box."""
    patches = []
    for path in (
        SHARED / "astronaut.png",
        SHARED / "grace_hopper.jpg",
        SHARED / "single_face.jpg",
        SHARED / "multi_face.jpg",
    ):
        photo = Image.open(path).convert("RGB")
        for box in reference(full, photo):
            cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
            half = 1.2 * max(box[2] - box[0], box[3] - box[1])
            region = (cx - half, cy - half, cx + half, cy + half)
            patch = photo.crop(tuple(round(v) for v in region))
            patches.append((patch, box - [region[0], region[1], region[0], region[1]]))
    return patches


def pasted(
    background: Image.Image, patches: list[tuple[Image.Image, np.ndarray]], widths: list[int]
) -> tuple[Image.Image, np.ndarray]:
    """`background` with patch i scaled so its face is widths[i] px wide, on a grid."""
    canvas = background.copy()
    cols = 4
    cell_w, cell_h = canvas.width // cols, canvas.height // max(1, -(-len(widths) // cols))
    boxes = []
    for i, width in enumerate(widths):
        patch, box = patches[i % len(patches)]
        s = width / (box[2] - box[0])
        scaled = patch.resize(
            (max(1, round(patch.width * s)), max(1, round(patch.height * s))),
            Image.Resampling.LANCZOS,
        )
        x = (i % cols) * cell_w + (cell_w - scaled.width) // 2
        y = (i // cols) * cell_h + (cell_h - scaled.height) // 2
        canvas.paste(scaled, (x, y))
        boxes.append(box * s + [x, y, x, y])
    return canvas, np.array(boxes)


def scenes(full: RetinaFaceDetector) -> list[Scene]:
    out = []
    for name, path in (
        ("multi_face", TESTS / "multi_face.jpg"),
        ("multi_face_shared", SHARED / "multi_face.jpg"),
    ):
        photo = Image.open(path).convert("RGB")
        out.append(Scene(name, photo, reference(full, photo)))
    patches = face_patches(full)
    frame = Image.open(SHARED / "no_face.jpg").convert("RGB")
    group, boxes = pasted(frame.resize((1280, 886)), patches, [60, 70, 80, 90, 100, 110])
    out.append(Scene("group_1280x886", group, boxes))
    for width in SMALL_FACES:
        image, boxes = pasted(frame, patches, [width] * 8)
        out.append(Scene(f"frame_1080p_{width}px", image, boxes))
    return out


def measure(detector: RetinaFaceDetector, scene: Scene, repeat: int) -> dict[str, float]:
    found = reference(detector, scene.image)
    hits = (iou(scene.boxes, found).max(axis=1) >= 0.4).sum() if len(found) else 0
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        detector.detect(scene.image)
        times.append(time.perf_counter() - t)
    # Two requests at once: two threads detecting the scene `repeat` times each.
    with ThreadPoolExecutor(2) as pool:
        t = time.perf_counter()
        list(pool.map(lambda _: detector.detect(scene.image), range(2 * repeat)))
        concurrent = (time.perf_counter() - t) / (2 * repeat)
    return {
        "faces": len(scene.boxes),
        "recall": round(float(hits) / len(scene.boxes), 3),
        "other_detections": int(max(0, len(found) - hits)),
        "ms_median": round(statistics.median(times) * 1000, 2),
        "ms_per_detection_two_at_once": round(concurrent * 1000, 2),
        "input": list(scene.image.size),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=20)
    args = p.parse_args()
    full = RetinaFaceDetector(min_face=8, max_side=4096)
    all_scenes = scenes(full)
    rows = []
    for min_face, threads in SETTINGS:
        detector = RetinaFaceDetector(min_face=min_face, threads=threads)
        for scene in all_scenes:
            detector.detect(scene.image)  # warm-up
            factor = reduction(*scene.image.size, min_face, detector.max_side)
            row = {
                "min_face": min_face,
                "threads": threads,
                "scene": scene.name,
                "factor": factor,
                **measure(detector, scene, args.repeat),
            }
            rows.append(row)
            print(
                f"min_face {min_face:3d} threads {threads} {scene.name:22s} x1/{factor} "
                f"recall {row['recall']:.3f} ({row['faces']} faces, "
                f"{row['other_detections']} other) {row['ms_median']:7.2f} ms, two at once "
                f"{row['ms_per_detection_two_at_once']:7.2f} ms each"
            )
    path = save(
        "detector",
        {
            "settings": {
                "repeat": args.repeat,
                "reliable_face_px": RELIABLE_FACE_PX,
                "max_side": detector.max_side,
                "iou": 0.4,
            },
            "rows": rows,
        },
    )
    print(f"saved {path}")


if __name__ == "__main__":
    main()
