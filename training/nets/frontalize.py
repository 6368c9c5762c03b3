"""Pose frontalization: a two-path encoder/decoder GAN of the DR-GAN family (Tran, Yin, Liu,
CVPR 2017), as the pose-invariant FER work this service follows uses it.

- Encoder: a face crop at any yaw -> an identity/expression code (pose-free by training).
- Decoder: (code, target pose as a one-hot over yaw bins, noise) -> the face at that pose.
- Discriminator: a shared conv trunk with three heads: identity (N training identities +
  one "fake" class), pose (the yaw bins) and real/fake.

Training alternates two paths (`training/train/frontalize.py`): generation (encode x_i,
decode at yaw 0, compared with the true frontal face) and reconstruction (encode x_i,
decode at the yaw of another view x_j of the same face, compared with x_j).

Sized for 48x48 grayscale crops: four stride-2 stages (48 -> 3), a 320-d code as DR-GAN,
noise of 50. `forward(face)` serves the frontal face in [-1, 1] (tanh), the contract of
service/handlers/generator.py (with the archive's `"inputs": ["face"]`). Depends on torch
only: it ships inside the `.mar`.
"""

from __future__ import annotations

import torch
from torch import nn

#: Yaw bins (degrees) the decoder renders and the discriminator's pose head tells apart.
DEFAULT_YAWS = (-60, -45, -30, -15, 0, 15, 30, 45, 60)
DEFAULT_WIDTHS = (32, 64, 128, 256)


def _down(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, 1, 1, bias=False),
        nn.BatchNorm2d(cout),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(cout, cout, 4, 2, 1, bias=False),
        nn.BatchNorm2d(cout),
        nn.LeakyReLU(0.2, inplace=True),
    )


def _up(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class Trunk(nn.Module):
    """Image [N, C, S, S] -> flat features [N, w4 * (S/16)^2]."""

    def __init__(self, in_channels: int, widths: tuple[int, ...], input_size: int) -> None:
        super().__init__()
        stages, cin = [], in_channels
        for w in widths:
            stages.append(_down(cin, w))
            cin = w
        self.net = nn.Sequential(*stages, nn.Flatten())
        self.features = widths[-1] * (input_size // 2 ** len(widths)) ** 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x)
        return out


class Frontalizer(nn.Module):
    """Encoder and decoder: everything that is served."""

    def __init__(
        self,
        input_size: int = 48,
        in_channels: int = 1,
        widths: tuple[int, ...] = DEFAULT_WIDTHS,
        code: int = 320,
        noise: int = 50,
        yaws: tuple[int, ...] = DEFAULT_YAWS,
    ) -> None:
        super().__init__()
        if input_size % 2 ** len(widths):
            raise ValueError(f"input_size must be a multiple of {2 ** len(widths)}")
        widths = tuple(int(w) for w in widths)
        self.yaws = tuple(int(y) for y in yaws)
        if 0 not in self.yaws:
            raise ValueError("the yaw bins must include 0 (the frontal view)")
        self.noise = noise
        self.side = input_size // 2 ** len(widths)
        self.encoder = nn.Sequential(
            Trunk(in_channels, widths, input_size),
            nn.Linear(widths[-1] * self.side**2, code),
        )
        self.project = nn.Sequential(
            nn.Linear(code + len(self.yaws) + noise, widths[-1] * self.side**2),
            nn.ReLU(inplace=True),
        )
        ups, cin = [], widths[-1]
        for w in (*reversed(widths[:-1]), widths[0]):
            ups.append(_up(cin, w))
            cin = w
        self.up = nn.Sequential(*ups)
        self.out = nn.Sequential(nn.Conv2d(cin, in_channels, 3, 1, 1), nn.Tanh())
        self.top = widths[-1]

    def pose_code(self, index: torch.Tensor) -> torch.Tensor:
        """One-hot yaw bins [N, bins] for bin indices [N]."""
        return nn.functional.one_hot(index, len(self.yaws)).float()

    def decode(
        self, code: torch.Tensor, pose: torch.Tensor, noise: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(code [N, code], pose one-hot [N, bins], noise) -> face [N, C, S, S] in [-1, 1]."""
        if noise is None:
            noise = torch.zeros(len(code), self.noise, device=code.device, dtype=code.dtype)
        h = self.project(torch.cat([code, pose.to(code.dtype), noise], 1))
        h = h.view(len(code), self.top, self.side, self.side)
        out: torch.Tensor = self.out(self.up(h))
        return out

    def forward(self, face: torch.Tensor) -> torch.Tensor:
        """The frontal view of `face` (normalised crop) in [-1, 1]; serving uses no noise."""
        frontal = torch.full((len(face),), self.yaws.index(0), dtype=torch.long, device=face.device)
        return self.decode(self.encoder(face), self.pose_code(frontal))


class Discriminator(nn.Module):
    """Shared trunk; heads for identity (+ fake), pose and real/fake."""

    def __init__(
        self,
        identities: int,
        input_size: int = 48,
        in_channels: int = 1,
        widths: tuple[int, ...] = DEFAULT_WIDTHS,
        yaws: int = len(DEFAULT_YAWS),
    ) -> None:
        super().__init__()
        self.trunk = Trunk(in_channels, tuple(int(w) for w in widths), input_size)
        self.identity = nn.Linear(self.trunk.features, identities + 1)
        self.pose = nn.Linear(self.trunk.features, yaws)
        self.real = nn.Linear(self.trunk.features, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.trunk(x)
        return self.identity(h), self.pose(h), self.real(h)[:, 0]


def build(**kwargs: object) -> Frontalizer:
    """Factory used by handlers: `build(**metadata["net"]["kwargs"])`."""
    return Frontalizer(**kwargs)  # type: ignore[arg-type]
