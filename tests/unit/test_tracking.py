"""service/tracking.py: faces linked into tracks by box overlap, then landmark distance."""

from __future__ import annotations

import numpy as np

from service.faces import Detection
from service.tracking import Tracker, iou, landmark_distance


def face(x: float, y: float, size: float = 100.0, shape: float = 1.0) -> Detection:
    """A face box at (x, y) with 5 landmarks placed inside it like a frontal face's."""
    box = (x, y, x + size, y + size * shape)
    unit = np.array([[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.35, 0.8], [0.65, 0.8]])
    return Detection(box, unit * [size, size * shape] + [x, y], 0.99)


def test_iou_and_landmark_distance() -> None:
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0
    assert abs(iou((0, 0, 10, 10), (5, 0, 15, 10)) - 1 / 3) < 1e-9
    assert landmark_distance(face(0, 0), face(0, 0)) == 0.0
    assert abs(landmark_distance(face(0, 0), face(10, 0)) - 0.1) < 1e-9


def test_one_face_moving_is_one_track() -> None:
    tracker = Tracker()
    ids = [tracker.update(t * 0.2, [face(100 + 15 * t, 50)]) for t in range(10)]
    assert ids == [[1]] * 10


def test_two_faces_keep_their_tracks_in_any_order() -> None:
    tracker = Tracker()
    assert tracker.update(0.0, [face(0, 0), face(300, 0)]) == [1, 2]
    # listed the other way round, and moved a little: each keeps its own track
    assert tracker.update(0.2, [face(310, 5), face(8, 3)]) == [2, 1]
    # a third face appears
    assert tracker.update(0.4, [face(15, 5), face(600, 0), face(318, 8)]) == [1, 3, 2]


def test_a_zoom_is_linked_by_landmarks() -> None:
    tracker = Tracker()
    tracker.update(0.0, [face(0, 0)])
    # the camera zoomed out: the box halved, overlapping too little (IoU 0.25) to link by
    # overlap, but the landmarks moved only 0.12 face sizes
    zoomed = face(25, 25, size=50)
    assert iou(face(0, 0).box, zoomed.box) < 0.3
    assert landmark_distance(face(0, 0), zoomed) < 0.35
    assert tracker.update(0.2, [zoomed]) == [1]


def test_a_face_gone_too_long_starts_a_new_track() -> None:
    tracker = Tracker(max_gap=1.0)
    assert tracker.update(0.0, [face(0, 0)]) == [1]
    assert tracker.update(0.2, []) == []
    assert tracker.update(0.8, [face(2, 0)]) == [1]  # back within the gap
    assert tracker.update(2.5, [face(2, 0)]) == [2]  # back after 1.7 s: a new track


def test_far_apart_faces_are_not_linked() -> None:
    tracker = Tracker()
    assert tracker.update(0.0, [face(0, 0)]) == [1]
    assert tracker.update(0.2, [face(400, 300)]) == [2]
