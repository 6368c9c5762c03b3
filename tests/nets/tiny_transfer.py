"""A tiny stand-in for TDGAN's generator, for tests of the transfer job pipeline only.

Same contract as the real one (service/handlers/generator.py): `forward(face, expression)`
takes two normalised crops [N, C, S, S] and returns an image in [-1, 1]. `delay` makes each
call take that many seconds, so that a test can kill a worker in the middle of a job.
"""

from __future__ import annotations

import time

import torch
from torch import nn


class TinyTransfer(nn.Module):
    """One 3x3 convolution over both crops, then tanh."""

    def __init__(self, channels: int = 3, delay: float = 0.0) -> None:
        super().__init__()
        self.mix = nn.Conv2d(2 * channels, channels, 3, padding=1)
        self.delay = delay

    def forward(self, face: torch.Tensor, expression: torch.Tensor) -> torch.Tensor:
        if self.delay:
            time.sleep(self.delay)
        return torch.tanh(self.mix(torch.cat([face, expression], dim=1)))


def build(channels: int = 3, delay: float = 0.0) -> TinyTransfer:
    return TinyTransfer(channels, delay)
