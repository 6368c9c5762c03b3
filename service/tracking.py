"""Face tracks over time: the faces of successive video frames linked into tracks.

Each frame's detections are matched to the tracks seen recently, best match first
(greedy, one detection per track): a detection continues a track when its box overlaps
the track's last box (IoU at least `min_iou`), or, for a face that moved fast or whose
box changed shape, when its 5 landmarks lie close to the track's last ones (mean distance
at most `max_landmark_distance` face sizes, the face size being the root of the box
area). A track not seen for more than `max_gap` seconds is closed: a face that comes back
later starts a new track. Unmatched detections start new tracks. Pure numpy and no state
beyond the open tracks, so memory does not grow with the clip.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from service.faces import Detection


def iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """Intersection over union of two boxes (x1, y1, x2, y2)."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def landmark_distance(a: Detection, b: Detection) -> float:
    """Mean distance of the 5 landmarks of two faces, in face sizes (of `a`)."""
    size = max(np.sqrt(a.area), 1.0)
    return float(np.linalg.norm(a.landmarks - b.landmarks, axis=1).mean() / size)


@dataclass
class _Open:
    id: int
    last: Detection
    seen: float  # seconds


class Tracker:
    """Links detections frame after frame into tracks numbered 1, 2, ... (see the module
    docstring). `update` with each frame's time and detections returns the track id of
    every detection, in their order."""

    def __init__(
        self, min_iou: float = 0.3, max_landmark_distance: float = 0.35, max_gap: float = 1.0
    ) -> None:
        self.min_iou = min_iou
        self.max_landmark_distance = max_landmark_distance
        self.max_gap = max_gap
        self._open: list[_Open] = []
        self._next = 1

    def _affinity(self, track: _Open, face: Detection) -> float:
        """How well `face` continues `track`: > 1 by overlap, (0, 1] by landmarks, else 0."""
        overlap = iou(track.last.box, face.box)
        if overlap >= self.min_iou:
            return 1.0 + overlap
        distance = landmark_distance(track.last, face)
        if distance <= self.max_landmark_distance:
            return 1.0 - distance / (2 * self.max_landmark_distance)
        return 0.0

    def update(self, time: float, faces: Sequence[Detection]) -> list[int]:
        """Assign each face of the frame at `time` (seconds) to a track."""
        self._open = [t for t in self._open if time - t.seen <= self.max_gap]
        pairs = sorted(
            (
                (score, ti, fi)
                for ti, track in enumerate(self._open)
                for fi, face in enumerate(faces)
                if (score := self._affinity(track, face)) > 0
            ),
            reverse=True,
        )
        ids: list[int | None] = [None] * len(faces)
        taken: set[int] = set()
        for _, ti, fi in pairs:
            if ti in taken or ids[fi] is not None:
                continue
            taken.add(ti)
            ids[fi] = self._open[ti].id
        out: list[int] = []
        by_id = {t.id: t for t in self._open}
        for face, track_id in zip(faces, ids, strict=True):
            if track_id is None:
                track_id = self._next
                self._next += 1
                self._open.append(_Open(track_id, face, time))
            else:
                by_id[track_id].last, by_id[track_id].seen = face, time
            out.append(track_id)
        return out
