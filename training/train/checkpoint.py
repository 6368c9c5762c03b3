"""Checkpoints that resume: `last.pt` every epoch, `best.pt` on a better validation score.

Checkpoints hold only tensors, numbers, strings, lists and dicts, so they load with
`torch.load(..., weights_only=True)`.
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path
from typing import Any

import torch

from service.handlers.layout import WEIGHTS_FILE

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


def net_kwargs(path: str | Path) -> dict[str, Any]:
    """The network arguments a checkpoint's or a `.mar`'s metadata records."""
    path = Path(path)
    if path.suffix == ".mar":
        from service.archive import read_manifest  # pydantic: not on a bare GPU machine

        return dict(read_manifest(path)[1].net.kwargs)
    return dict(load(path)["metadata"]["net"]["kwargs"])


def load_weights(path: str | Path) -> dict[str, Any]:
    """A float32 state_dict from a checkpoint or from a `.mar` (e.g. to fine-tune a shipped
    model whose weights are stored as float16)."""
    path = Path(path)
    if path.suffix == ".mar":
        with zipfile.ZipFile(path) as z:
            raw = z.read(WEIGHTS_FILE)
        weights = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    else:
        weights = load(path)["model"]
    return {k: v.float() if v.is_floating_point() else v for k, v in weights.items()}
