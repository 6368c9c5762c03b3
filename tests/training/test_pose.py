"""Pose synthesis (a 3D-aware warp of frontal faces to other yaws) and the yaw estimate
from 5 landmarks, which share one generic head model (service/pose.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from service.pose import DEPTH_RATIO, TEMPLATE, estimate_yaw
from training.data.pose import landmarks_at_yaw, turn
from training.data.synthetic import make_dataset

SIZE = 48


def test_yaw_zero_gives_the_face_back() -> None:
    faces = make_dataset(6, seed=1, identities=range(3)).images
    assert np.array_equal(turn(faces, 0.0), faces)
    assert not np.array_equal(turn(faces, 15.0), faces)


def dots(points: np.ndarray) -> np.ndarray:
    """A dark crop with a bright 2x2 dot at each point (crop units)."""
    image = np.full((SIZE, SIZE), 30, np.uint8)
    for u, v in points * SIZE:
        c, r = int(u), int(v)
        image[r - 1 : r + 1, c - 1 : c + 1] = 250
    return image


@pytest.mark.parametrize("yaw", [-30.0, -15.0, 20.0, 30.0])  # all 5 points stay in view
def test_landmarks_move_as_the_yaw_says(yaw: float) -> None:
    # Dots at the eyes, nose and mouth corners of the framing, turned with the face:
    # each bright blob lands where `landmarks_at_yaw` says (within a pixel).
    frontal = np.round(TEMPLATE * SIZE) / SIZE  # on pixel corners: dots are exact 2x2
    turned = turn(dots(frontal)[None], yaw)[0].astype(float)
    expected = landmarks_at_yaw(frontal, yaw) * SIZE
    for ex, ey in expected:
        r0, c0 = int(ey) - 3, int(round(ex)) - 4
        patch = turned[r0 : r0 + 6, c0 : c0 + 8] - 30
        weight = np.clip(patch, 0, None)
        cx = c0 + (weight.sum(0) * (np.arange(8) + 0.5)).sum() / weight.sum()
        assert cx == pytest.approx(ex, abs=1.0)
        # the nose stands out: it moves with the turn more than the eyes
    nose_shift = expected[2, 0] - frontal[2, 0] * SIZE
    eye_shift = expected[0, 0] - frontal[0, 0] * SIZE
    assert math.copysign(1, nose_shift) == math.copysign(1, yaw)
    assert abs(nose_shift) > abs(eye_shift)


@pytest.mark.parametrize("yaw", [-60.0, -30.0, -10.0, 0.0, 15.0, 45.0, 70.0])
@pytest.mark.parametrize("roll", [0.0, 12.0])
def test_yaw_estimate_recovers_the_synthesised_yaw(yaw: float, roll: float) -> None:
    points = landmarks_at_yaw(TEMPLATE, yaw) * 180  # a face of about 180 px
    r = math.radians(roll)
    rotation = np.array([[math.cos(r), -math.sin(r)], [math.sin(r), math.cos(r)]])
    image_points = points @ rotation.T + np.array([300.0, 120.0])
    assert estimate_yaw(image_points) == pytest.approx(yaw, abs=0.5)


def test_frontal_template_is_yaw_zero_and_the_nose_stands_out() -> None:
    assert estimate_yaw(TEMPLATE * 100) == pytest.approx(0.0, abs=1e-6)
    assert 0.6 < DEPTH_RATIO < 1.0  # nose tip in front of eyes/mouth, as real heads
