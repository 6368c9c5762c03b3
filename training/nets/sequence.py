"""Frame-to-sequence expression model: a GRU over the per-frame features of a trained
frame classifier.

Kuo, Lai, Sarkis (CVPRW 2018) extend their compact frame classifier to image sequences
by feeding its per-frame features to a GRU and classifying the sequence from its state
("frame-to-sequence"). Here the frame network is the compact CNN (`compact.py`, loaded
from beside this file, in the source tree and inside a `.mar` alike): a frame's feature
is the output of its second fully connected layer (after the ReLU, before the class
layer). The features are layer-normalised, go through a one-layer GRU, and the hidden
state after the last frame of each sequence is mapped to the class logits.

Choices the paper leaves open: the backbone is frozen (its weights are a trained
`compact.mar`'s; training fits only the GRU and the head, which keeps the archive's
backbone identical to the shipped frame classifier), GRU width 64, dropout on the
features during training.

This file depends on torch only: it is copied into `.mar` archives with `compact.py`.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import Any

import torch
from torch import nn


def _compact() -> Any:
    """The compact CNN's module, from the `compact.py` beside this file."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "compact.py")
    name = f"_fer_sequence_backbone_{abs(hash(path))}"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot import {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


class FrameToSequence(nn.Module):
    """Compact CNN features per frame -> GRU -> class logits per sequence."""

    def __init__(
        self,
        backbone: dict[str, Any] | None = None,
        hidden: int = 64,
        num_classes: int = 7,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.backbone = _compact().CompactCNN(**(backbone or {}))
        width = self.backbone.classifier[-1].in_features
        self.norm = nn.LayerNorm(width)
        self.drop = nn.Dropout(dropout)
        self.gru = nn.GRU(width, hidden, batch_first=True)
        self.head = nn.Linear(hidden, num_classes)
        self.feature_size = width

    def frame_features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised crops `[N, C, S, S]` -> frame features `[N, D]` (the backbone's
        penultimate layer; the backbone's dropout is off in eval mode)."""
        return self.backbone.classifier[:-1](self.backbone.features(x))

    def classify_features(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Frame features `[B, T, D]` of sequences of `lengths` (padded at the end) ->
        logits `[B, classes]` from the GRU state after each sequence's last frame."""
        out, _ = self.gru(self.drop(self.norm(feats)))
        last = (lengths.clamp(min=1) - 1).to(out.device)
        return self.head(out[torch.arange(out.shape[0], device=out.device), last])

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Crops `[B, T, C, S, S]` (padded at the end; `lengths` default T) -> logits."""
        b, t = x.shape[:2]
        feats = self.frame_features(x.reshape(b * t, *x.shape[2:])).reshape(b, t, -1)
        if lengths is None:
            lengths = torch.full((b,), t, dtype=torch.long)
        return self.classify_features(feats, lengths)


def build(**kwargs: Any) -> FrameToSequence:
    """Factory used by handlers: `build(**metadata["net"]["kwargs"])`."""
    return FrameToSequence(**kwargs)
