"""The 3-CNN ensemble of the pose-invariant FER thesis this service follows: three CNNs
with 3x3, 5x5 and 7x7 kernels, three conv-pool stages each, fully connected layers with
dropout, their class scores averaged (the thesis' FER2013 table: 63.45 / 63.27 / 65.89 for
the members, 71.79% for the ensemble).

The thesis' FC stack (3072-2048-1024-512 per member) alone would be over 60 M parameters
for three members, far over the 20 MB an archive may weigh; here each member keeps the
shape (three conv-pool stages, then FC layers halving in width, dropout 0.8 on the first
and 0.5 on the next, as the thesis), with widths that put the whole ensemble near 7 M
parameters (about 14 MB as float16): conv widths 64-128-256 (two convs per stage, batch
norm, VGG-style), FC 512-256. The members are trained together, each with its own loss
(`forward_all` gives their logits to the trainer, as DeRL's local CNNs), and served as
one network whose logits are the mean of the members' log-probabilities (the geometric
mean of their probabilities).

Depends on torch only: it ships inside the `.mar`.
"""

from __future__ import annotations

import torch
from torch import nn

KERNELS = (3, 5, 7)
DEFAULT_WIDTHS = (32, 64, 128)
DEFAULT_FC = (256, 128)


class Member(nn.Module):
    """One CNN: three stages of two convs (kernel k) + batch norm + ReLU and a max-pool,
    then FC layers with dropout."""

    def __init__(
        self,
        kernel: int,
        num_classes: int = 7,
        input_size: int = 48,
        in_channels: int = 1,
        widths: tuple[int, ...] = DEFAULT_WIDTHS,
        fc: tuple[int, ...] = DEFAULT_FC,
        dropout: tuple[float, float] = (0.8, 0.5),
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for w in widths:
            for _ in range(2):
                layers += [
                    nn.Conv2d(cin, w, kernel, padding=kernel // 2, bias=False),
                    nn.BatchNorm2d(w),
                    nn.ReLU(inplace=True),
                ]
                cin = w
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        side = input_size // 2 ** len(widths)
        head: list[nn.Module] = [nn.Flatten()]
        fin = cin * side * side
        for i, width in enumerate(fc):
            head += [nn.Dropout(dropout[min(i, 1)]), nn.Linear(fin, width), nn.ReLU(inplace=True)]
            fin = width
        head += [nn.Dropout(dropout[1]), nn.Linear(fin, num_classes)]
        self.classifier = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.classifier(self.features(x))
        return out


class Ensemble(nn.Module):
    """Three members with kernels 3, 5 and 7; logits = mean of their log-probabilities."""

    def __init__(
        self,
        num_classes: int = 7,
        input_size: int = 48,
        in_channels: int = 1,
        widths: tuple[int, ...] = DEFAULT_WIDTHS,
        fc: tuple[int, ...] = DEFAULT_FC,
        kernels: tuple[int, ...] = KERNELS,
        dropout: tuple[float, float] = (0.8, 0.5),
    ) -> None:
        super().__init__()
        if input_size % 2 ** len(widths):
            raise ValueError(f"input_size must be a multiple of {2 ** len(widths)}")
        widths, fc = tuple(int(w) for w in widths), tuple(int(f) for f in fc)
        self.members = nn.ModuleList(
            Member(k, num_classes, input_size, in_channels, widths, fc, tuple(dropout))  # type: ignore[arg-type]
            for k in kernels
        )

    def forward_all(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], None]:
        """(ensemble logits, each member's logits, None): the trainer's interface."""
        logits = [m(x) for m in self.members]
        mean = torch.stack([torch.log_softmax(z.float(), 1) for z in logits]).mean(0)
        return mean, logits, None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Ensemble logits (log of the geometric mean of the members' probabilities)."""
        return self.forward_all(x)[0]


def build(**kwargs: object) -> Ensemble:
    """Factory used by handlers: `build(**metadata["net"]["kwargs"])`."""
    return Ensemble(**kwargs)  # type: ignore[arg-type]
