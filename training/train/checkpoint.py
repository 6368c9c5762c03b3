"""Checkpoints that resume: `last.pt` every epoch, `best.pt` on a better validation score.

Checkpoints hold only tensors, numbers, strings, lists and dicts, so they load with
`torch.load(..., weights_only=True)`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

LAST = "last.pt"
BEST = "best.pt"


def save(state: dict[str, Any], path: Path) -> None:
    """Write atomically: a killed process never leaves a truncated checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint on the CPU."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or "model" not in state:
        raise ValueError(f"{path} is not a fer-service checkpoint")
    return state
