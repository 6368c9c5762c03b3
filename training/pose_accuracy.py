"""Expression accuracy of a classifier on turned faces, with and without frontalization.

Labelled frontal crops (FER2013 PublicTest, held-out CK+ subjects) are turned to each yaw
by the 3D-aware warp of `training/data/pose.py`; the judge (any classifier `.mar` or
checkpoint, through its serving handler) reads them as they are and, with a frontalizer,
after frontalization. The turned faces are synthesised, so the figures tell how
recognition degrades with a generic head's turn, not with real profiles (see
`training/data/pose.py` for what the warp can and cannot show).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.data.pose import turn
from training.data.samples import FaceSet
from training.data.tensors import to_float, to_uint8

#: uint8 crops [N, S, S] -> uint8 frontal crops [N, S, S]
Frontalize = Callable[[np.ndarray], np.ndarray]
#: uint8 crops [N, S, S] -> class probabilities [N, classes]
Judge = Callable[[np.ndarray], np.ndarray]


def load_frontalizer(path: str | Path) -> Frontalize:
    """A frontalizer from a `fer-train frontalize` checkpoint / export.pt or a `.mar`."""
    from training.nets.frontalize import Frontalizer
    from training.train import checkpoint

    model = Frontalizer(**checkpoint.net_kwargs(path))
    model.load_state_dict(checkpoint.load_weights(path))
    model.eval()

    @torch.inference_mode()
    def frontalize(images: np.ndarray) -> np.ndarray:
        x = to_float(images, -1.0, 1.0)
        out = torch.cat([model(x[i : i + 256]) for i in range(0, len(x), 256)])
        return to_uint8(out, -1.0, 1.0)

    return frontalize


def pose_accuracy(
    judge: Judge,
    data: FaceSet,
    yaws: tuple[float, ...] = (0, 15, 30, 45, 60),
    frontalize: Frontalize | None = None,
) -> dict[str, Any]:
    """Accuracy per yaw on `data` turned to each yaw, as it is and (with `frontalize`)
    after frontalization."""
    labels = data.labels
    rows: dict[str, dict[str, float]] = {}
    for yaw in yaws:
        turned = turn(data.images, float(yaw))
        row = {"turned": float(np.mean(judge(turned).argmax(1) == labels))}
        if frontalize is not None:
            row["frontalized"] = float(np.mean(judge(frontalize(turned)).argmax(1) == labels))
        rows[str(yaw)] = row
    return {"n": len(data), "yaws": [float(y) for y in yaws], "accuracy": rows}
