"""uint8 face crops <-> float tensors: the one conversion every trainer and metric uses.

Networks differ in the value range they read and write ([0, 1] for TDGAN and the
classifiers before normalisation, [-1, 1] for the DeRL generator); `low` and `high` say
which, so one pair of functions serves them all.
"""

from __future__ import annotations

import numpy as np
import torch


def to_device(images: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 [N,H,W] -> uint8 [N,1,H,W] on `device` (whole data sets live there as uint8:
    a quarter of the memory of float32, converted a batch at a time)."""
    return torch.from_numpy(np.ascontiguousarray(images, dtype=np.uint8)).unsqueeze(1).to(device)


def to_float(
    images: np.ndarray | torch.Tensor, low: float = 0.0, high: float = 1.0
) -> torch.Tensor:
    """uint8 images ([N,H,W] array or [N,1,H,W] tensor) -> float [N,1,H,W] in [low, high]."""
    x = to_device(images) if isinstance(images, np.ndarray) else images
    x = x.float().mul_((high - low) / 255.0)
    return x.add_(low) if low else x


def to_uint8(x: torch.Tensor, low: float = 0.0, high: float = 1.0) -> np.ndarray:
    """float [N,1,H,W] in [low, high] -> uint8 [N,H,W] on the CPU (rounded, clamped)."""
    unit = (x.detach().float() - low) / (high - low)
    return unit.clamp(0, 1).mul(255).round().to(torch.uint8)[:, 0].cpu().numpy()
