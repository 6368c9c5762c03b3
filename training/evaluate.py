"""Load any checkpoint or `.mar` as a serving handler, for evaluation on any data set."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from service.handlers.classifier import ClassifierHandler
from training.nets import build_net
from training.train import checkpoint


def load_handler(path: str | Path) -> Any:
    """A ready handler with `predict_arrays` and `classes` for a `.mar` or a checkpoint."""
    path = Path(path)
    if path.suffix == ".mar":
        from service.archive import open_archive  # pydantic: not on a bare GPU machine

        return open_archive(path).handler
    state = checkpoint.load(path)
    meta = state["metadata"]
    handler = ClassifierHandler()
    handler.setup(build_net(meta["net"]["module"], meta["net"]["kwargs"]), state["model"], meta)
    return handler
