"""Other yaws of frontal faces: a 3D-aware warp, for frontalization training pairs.

No multi-pose face set with identities is available, so pairs (turned face, frontal face
of the same person) are made from frontal faces: each aligned crop is laid on the generic
head of `service/pose.py` (an elliptic cylinder with a nose ridge, in the crop's
`fer2013` framing), the head is turned about its vertical axis, and the texture is
re-rendered from the front (orthographic). Per output pixel the visible surface point is
the front-most one (a z-buffer over a 4x finer sampling of each row); where the turn
brings into view what the frontal crop never showed (the far cheek's side, beyond the
silhouette), the nearest visible texture is stretched over it.

What this can show: how a classifier and a frontalizer behave when the face's geometry
turns as a generic head would, with the true frontal face known. What it cannot: real
self-occlusion by the nose, the real profile of a person, ears and hair at large yaws,
lighting that moves with the head. Figures measured on these pairs say so.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from service.pose import CENTRE, depth

SUPERSAMPLE = 4


@lru_cache(maxsize=64)
def _source_columns(yaw: float, size: int) -> np.ndarray:
    """For each output pixel of a `size` crop turned by `yaw` degrees, the source column
    (in crop units) whose surface point is seen there: [size, size]."""
    t = math.radians(yaw)
    n = size * SUPERSAMPLE
    u = (np.arange(n) + 0.5) / n  # fine samples of a row, crop units
    out_u = (np.arange(size) + 0.5) / size
    table = np.empty((size, size))
    for row in range(size):
        v = (row + 0.5) / size
        z = depth(u, np.full(n, v))
        x = (u - CENTRE) * math.cos(t) + z * math.sin(t) + CENTRE  # where each lands
        front = -(u - CENTRE) * math.sin(t) + z * math.cos(t)  # how near the viewer
        # z-buffer on the fine grid: in each fine bin the front-most sample is seen
        bins = np.clip((x * n).astype(int), 0, n - 1)
        best = np.full(n, -np.inf)
        np.maximum.at(best, bins, front)
        seen = front >= best[bins] - 1e-9
        xs, us = x[seen], u[seen]
        order = np.argsort(xs, kind="stable")
        # Between seen samples (stretched parts) and beyond them (edges): interpolate,
        # clamp; both repeat the nearest texture rather than invent any.
        table[row] = np.interp(out_u, xs[order], us[order])
    return table


def landmarks_at_yaw(points: np.ndarray, yaw: float) -> np.ndarray:
    """Where crop points [K, 2] (crop units) of the frontal face go at `yaw` degrees."""
    t = math.radians(yaw)
    u, v = points[:, 0], points[:, 1]
    x = (u - CENTRE) * math.cos(t) + depth(u, v) * math.sin(t) + CENTRE
    return np.stack([x, v], 1)


def sampling_grid(yaw: float, size: int) -> torch.Tensor:
    """The `grid_sample` grid [S, S, 2] that turns a `size` crop by `yaw` degrees."""
    table = _source_columns(float(yaw), size)
    gx = torch.from_numpy(table * 2 - 1).float()  # grid_sample's [-1, 1], pixel centres
    gy = torch.from_numpy((np.arange(size) + 0.5) / size * 2 - 1).float()
    return torch.stack([gx, gy[:, None].expand(size, size)], -1)


def turn_tensor(x: torch.Tensor, grids: torch.Tensor) -> torch.Tensor:
    """Float crops [N, C, S, S] turned by per-sample grids [N, S, S, 2] (on their device)."""
    return F.grid_sample(x, grids, mode="bilinear", padding_mode="border", align_corners=False)


def turn(images: np.ndarray, yaw: float) -> np.ndarray:
    """Frontal aligned crops uint8 [N, S, S] as seen at `yaw` degrees (0: unchanged)."""
    n, size, _ = images.shape
    if n == 0:
        return images.copy()
    grids = sampling_grid(yaw, size).expand(n, size, size, 2)
    out = turn_tensor(torch.from_numpy(images).float().unsqueeze(1), grids)
    return out[:, 0].round().clamp(0, 255).to(torch.uint8).numpy()
