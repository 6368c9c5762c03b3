"""Compact CNN for facial expression recognition.

Kuo, Lai, Sarkis, "A Compact Deep Learning Model for Robust Facial Expression
Recognition", CVPR Workshops 2018. Two conv-pool blocks, each with two stacked
convolutions before the max-pool, using larger kernels than the usual 3x3 in the first
block, followed by two small fully connected layers with dropout.

Choices the paper leaves to the implementer (widths and kernels were also picked to keep a
training epoch on FER2013 under a minute on two CPU cores):
- block 1: 2 x conv 5x5, 32 channels; block 2: 2 x conv 3x3, 64 channels by default
  (the shipped model has 128: `widths=(32, 128)`, grown from a trained 64-channel model,
  see `training/train/widen.py` and model_store/MODEL_CARD.md);
- batch norm after every convolution (faster, more stable training than the paper's plain
  ReLU convs); FC 256 -> 256 -> classes with dropout 0.5.

This file depends on torch only: it is copied into `.mar` archives as the network source.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv(cin: int, cout: int, kernel: int) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


class CompactCNN(nn.Module):
    """Two conv-pool blocks plus two FC layers; `input_size` is the square crop side."""

    def __init__(
        self,
        num_classes: int = 7,
        input_size: int = 48,
        in_channels: int = 1,
        widths: tuple[int, int] = (32, 64),
        kernels: tuple[int, int] = (5, 3),
        fc: int = 256,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if input_size % 4:
            raise ValueError(f"input_size must be a multiple of 4, got {input_size}")
        w1, w2 = widths
        k1, k2 = kernels
        self.input_size = input_size
        self.widths = (w1, w2)
        self.features = nn.Sequential(
            *_conv(in_channels, w1, k1),
            *_conv(w1, w1, k1),
            nn.MaxPool2d(2),
            *_conv(w1, w2, k2),
            *_conv(w2, w2, k2),
            nn.MaxPool2d(2),
        )
        side = input_size // 4
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout / 2),
            nn.Linear(w2 * side * side, fc),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(fc, fc),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(fc, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map a batch `[N, C, S, S]` of normalised crops to class logits `[N, classes]`."""
        return self.classifier(self.features(x))


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def build(**kwargs: object) -> CompactCNN:
    """Factory used by handlers: `build(**metadata["net_kwargs"])`."""
    return CompactCNN(**kwargs)  # type: ignore[arg-type]
