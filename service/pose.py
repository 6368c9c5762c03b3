"""Head yaw from the detector's 5 landmarks, with the generic head model it assumes.

The model is a head in the coordinates of an aligned crop (the `fer2013` framing, crop
side = 1): an elliptic cylinder about the vertical axis through the crop's centre,
half-width `HALF_WIDTH`, depth `DEPTH` at the front, plus a nose ridge (a Gaussian bump of
height `NOSE` centred between the eyes and the nose tip). `depth(u, v)` gives the height
of the face surface at crop point (u, v); the pose synthesis of the training package
(`training/data/pose.py`) turns faces with this very model, so the estimate below and the
synthesised yaws agree by construction.

Yaw is positive when the face turns towards the image's right (its nose moves right), as
in the procedural faces (`training/data/synthetic.py`). Under a yaw `t` (orthographic
view), a landmark at (u, z) moves to u' = (u - c) cos t + z sin t + c. The nose lies on the
axis and the eyes and mouth corners in symmetric pairs, so the nose's offset from the mean
of the other four points is (z_nose - z_mean4) sin t while the half distance between the
eyes is a cos t: tan t = (offset / half eye distance) * a / (z_nose - z_mean4). The roll
is removed first (the eye line made horizontal).
"""

from __future__ import annotations

import math

import numpy as np

#: Landmarks of the `fer2013` framing in crop units (u right, v down), in the detector's
#: order: eyes, nose, mouth corners (as `service.faces.FRAMINGS["fer2013"]`).
TEMPLATE = np.array(
    [[0.3181, 0.3889], [0.6819, 0.3889], [0.5000, 0.6003], [0.3532, 0.7650], [0.6468, 0.7650]]
)
CENTRE = 0.5  # the vertical axis of rotation (u)
HALF_WIDTH = 0.47  # half-width of the head's elliptic cylinder (cheek to cheek)
DEPTH = 0.5  # its depth at the front (the ellipse's other semi-axis)
#: The nose ridge: height, centre (u, v) and widths. With these, the nose tip stands 0.8
#: half eye-distances in front of the mean of the eyes and mouth corners, about what
#: anthropometric head models give (~25 mm against ~31 mm).
NOSE = 0.142
NOSE_AT = (0.5, 0.54)
NOSE_SIGMA = (0.075, 0.09)
#: Beyond this yaw the 5 landmarks no longer tell yaw reliably (the far eye hides).
MAX_YAW = 75.0


def depth(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Height of the generic face surface at crop points (u, v) (0 outside the head)."""
    x = np.clip((np.asarray(u, dtype=np.float64) - CENTRE) / HALF_WIDTH, -1.0, 1.0)
    z = DEPTH * np.sqrt(1.0 - x * x)
    du = (np.asarray(u) - NOSE_AT[0]) / NOSE_SIGMA[0]
    dv = (np.asarray(v) - NOSE_AT[1]) / NOSE_SIGMA[1]
    return np.asarray(z + NOSE * np.exp(-0.5 * (du * du + dv * dv)))


def _depth_ratio() -> float:
    """(z_nose - mean z of eyes and mouth corners) / half eye distance of the template."""
    z = depth(TEMPLATE[:, 0], TEMPLATE[:, 1])
    half_eyes = (TEMPLATE[1, 0] - TEMPLATE[0, 0]) / 2
    return float((z[2] - z[[0, 1, 3, 4]].mean()) / half_eyes)


DEPTH_RATIO = _depth_ratio()


def estimate_yaw(landmarks: np.ndarray) -> float:
    """Yaw in degrees (positive: the face turns towards the image's right) from 5
    landmarks [5, 2] in image pixels, clamped to +-MAX_YAW."""
    p = np.asarray(landmarks, dtype=np.float64)
    eye_l, eye_r = p[0], p[1]
    dx, dy = eye_r - eye_l
    roll = math.atan2(dy, dx)
    c, s = math.cos(-roll), math.sin(-roll)
    x = (p[:, 0] - eye_l[0]) * c - (p[:, 1] - eye_l[1]) * s  # roll removed
    half_eyes = (x[1] - x[0]) / 2
    if half_eyes <= 1e-6:
        return 0.0
    offset = x[2] - x[[0, 1, 3, 4]].mean()
    yaw = math.degrees(math.atan(offset / half_eyes / DEPTH_RATIO))
    return float(max(-MAX_YAW, min(MAX_YAW, yaw)))
