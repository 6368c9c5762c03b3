"""TDGAN: Two-branch Disentangled GAN (Xie, Hu, Chen, IEEE TCSVT 31(6), 2021).

An expression encoder reads the expression image, a face encoder reads the face image;
their feature maps, concatenated with uniform noise, are decoded into the face of the face
image wearing the expression of the expression image. An expression classifier (FC) on
the expression encoder's features makes the expression branch a facial expression
recogniser. Two discriminators, each an encoder plus an FC head like the classifier's,
judge the generated face: one over the N training identities plus a "fake" class, one over
the 7 expressions (trained on real images only). The losses live in the trainer
(`training/train/tdgan.py`); this module holds the networks and depends on torch only (it
ships inside the `.mar`).

As in the paper (and its reference code, github.com/XsLangley/TDGAN, `models.py`):
- Encoder: conv 5x5 (w1) + instance norm (affine, eps 1e-3) + ReLU, max-pool 3/2;
  conv 5x5 (w2), max-pool; 4 Inception-ResNet blocks (3 branches of w2/4 channels:
  1x1 | 1x1-3x3 | 1x1-3x3-3x3, concatenated, 1x1 conv back to w2, scaled by 0.17, added,
  ReLU); conv 5x5 (w3), max-pool; conv 5x5 (w3); with the paper's 4th max-pool the map is
  w3 x 8 x 8 for 128 px input (w = 32, 64, 128).
- FC heads (classifier, discriminators): dropout 0.5, FC `fc`, ReLU, dropout 0.5, FC `fc`,
  ReLU, FC classes (the paper: 8192-1024-1024-7); weights N(0, 0.02), biases 0.
- Decoder: concat(expression features, face features, noise) -> conv 3x3 to `embed` + ReLU,
  6 residual blocks (x + ReLU(conv 3x3 x)), transposed convs 4x4 stride 2 + instance norm +
  ReLU, then a 3x3 conv to 1 channel and a sigmoid; conv weights N(0, 0.02). Images are in
  [0, 1] at the input (no normalisation) and at the sigmoid output.
- Noise: uniform in [0, 1), `noise` channels at the feature map's size, drawn afresh on
  every call unless given (also when serving: the paper samples it at test time too).

Deviations (sized for the 48x48 grayscale crops of FER2013 and CK+, and for a CPU):
- 48 px input, 3 max-pools instead of 4 (the 4th, after the last conv, is dropped): the
  feature map is w3 x 6 x 6 and the decoder has 3 transposed convs (6 -> 12 -> 24 -> 48)
  instead of 4. Upsampling the crops to 64 or 128 px would add no information and cost
  1.8x (64 px) or 7x (128 px) the compute. `input_size` and `pools` allow other sizes
  (`pools=4`, `input_size=128` is the paper's geometry).
- The transposed convs take the paper's last 3 widths scaled by the width factor: the
  paper has 512, 256, 128, 64 after `embed` = 128; the defaults here are 128, 64, 32
  after `embed` = 64 (the paper's 3 last widths, halved).
- Conv widths halved by default: encoder (16, 32, 64) instead of (32, 64, 128), decoder
  `embed` 64 instead of 128, noise 128 channels instead of 256 (the paper's ratio of 2x
  the encoder output). That is about a quarter of the paper's multiply-adds and half its
  time per training step on a CPU (measured: 1.3 s against 2.6 s per batch of 32, one
  thread, float32), where the small layers are overhead-bound. `PAPER_WIDTHS` holds the
  paper's (`fer-train tdgan --paper-widths`).
- FC heads keep the paper's width 1024 (cheap next to the convs); their input is
  w3 x 6 x 6 = 2304 features at the defaults (the paper: 8192).
- The last layer is a 3x3 `Conv2d` (the reference code uses a stride-1 3x3
  `ConvTranspose2d`, the same operation with a flipped kernel).
- `forward(face, expression)` returns the generated face mapped to [-1, 1] (2 * sigmoid
  - 1), the range every generating handler serves (service/handlers/generator.py);
  `generate` returns the paper's [0, 1] image, which training uses.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

#: Encoder widths (w1, w2, w3); the paper's are (32, 64, 128).
DEFAULT_WIDTHS = (16, 32, 64)
#: Transposed-conv widths of the decoder (one per max-pool); the paper's last 3 are
#: (256, 128, 64).
DEFAULT_UP_WIDTHS = (128, 64, 32)
#: The paper's widths at 48 px (`TDGAN(**PAPER_WIDTHS)`).
PAPER_WIDTHS: dict[str, object] = {
    "widths": (32, 64, 128),
    "embed": 128,
    "up_widths": (256, 128, 64),
    "noise": 256,
}
RESIDUAL_SCALE = 0.17


def _init_normal(module: nn.Module) -> None:
    """The reference code's initialisation for FC heads and the decoder: N(0, 0.02)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def instance_norm(channels: int, eps: float = 1e-5, affine: bool = False) -> nn.GroupNorm:
    """Instance normalisation as a group norm with one channel per group: the same function
    and the same parameters (`weight`, `bias`) as `nn.InstanceNorm2d` without running
    statistics, but one fused kernel, where `InstanceNorm2d` repeats its affine parameters
    per sample and copies on every call (host overhead that bound a GPU training step)."""
    return nn.GroupNorm(channels, channels, eps=eps, affine=affine)


class ConvIN(nn.Sequential):
    """Conv (stride 1, same padding, no bias) + instance norm + ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, kernel, 1, kernel // 2, bias=False),
            instance_norm(cout, eps=1e-3, affine=True),
            nn.ReLU(inplace=True),
        )


class InceptionResNetBlock(nn.Module):
    """Inception-ResNet block (the reference code's `block32_Ins`): 3 branches of
    `channels // 4`, concatenated, 1x1 conv back to `channels`, scaled and added."""

    def __init__(self, channels: int, scale: float = RESIDUAL_SCALE) -> None:
        super().__init__()
        b = max(1, channels // 4)
        self.scale = scale
        self.branch0 = ConvIN(channels, b, 1)
        self.branch1 = nn.Sequential(ConvIN(channels, b, 1), ConvIN(b, b, 3))
        self.branch2 = nn.Sequential(ConvIN(channels, b, 1), ConvIN(b, b, 3), ConvIN(b, b, 3))
        self.mix = nn.Conv2d(3 * b, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed = self.mix(torch.cat([self.branch0(x), self.branch1(x), self.branch2(x)], 1))
        return F.relu(x + self.scale * mixed)


def feature_size(input_size: int, pools: int) -> int:
    """Side of the encoder's map: `pools` max-pools of 3/2 with ceil mode."""
    size = input_size
    for _ in range(pools):
        size = -(-(size - 3) // 2) + 1
    return size


class Encoder(nn.Module):
    """Image [N, C, S, S] in [0, 1] -> feature map [N, w3, S/2^pools, S/2^pools]."""

    def __init__(
        self,
        in_channels: int = 1,
        widths: tuple[int, int, int] = DEFAULT_WIDTHS,
        blocks: int = 4,
        pools: int = 3,
    ) -> None:
        super().__init__()
        if pools not in (3, 4):
            raise ValueError(f"pools must be 3 (48 px) or 4 (the paper's 128 px), got {pools}")
        w1, w2, w3 = widths
        self.channels = w3
        pool = nn.MaxPool2d(3, 2, ceil_mode=True)
        layers: list[nn.Module] = [
            ConvIN(in_channels, w1, 5),
            pool,
            ConvIN(w1, w2, 5),
            pool,
            *[InceptionResNetBlock(w2) for _ in range(blocks)],
            ConvIN(w2, w3, 5),
            pool,
            ConvIN(w3, w3, 5),
        ]
        if pools == 4:
            layers.append(pool)
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x)
        return out


class FCHead(nn.Module):
    """Flattened features -> logits: dropout, FC, ReLU, dropout, FC, ReLU, FC."""

    def __init__(self, features: int, num_classes: int, fc: int = 1024, dropout: float = 0.5):
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(features, fc),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(fc, fc),
            nn.ReLU(inplace=True),
            nn.Linear(fc, num_classes),
        )
        _init_normal(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x)
        return out


class ResidualBlock(nn.Module):
    """x + ReLU(conv 3x3 x) (the decoder's blocks; no normalisation, as in the paper)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + F.relu(self.conv(x))


class Decoder(nn.Module):
    """(expression map, face map, noise) -> image [N, C, S, S] in [0, 1] (sigmoid)."""

    def __init__(
        self,
        features: int = DEFAULT_WIDTHS[-1],
        noise: int = 128,
        embed: int = 64,
        blocks: int = 6,
        up_widths: tuple[int, ...] = DEFAULT_UP_WIDTHS,
        out_channels: int = 1,
    ) -> None:
        super().__init__()
        self.noise = noise
        self.embed = nn.Sequential(
            nn.Conv2d(2 * features + noise, embed, 3, 1, 1), nn.ReLU(inplace=True)
        )
        self.blocks = nn.Sequential(*[ResidualBlock(embed) for _ in range(blocks)])
        ups: list[nn.Module] = []
        cin = embed
        for w in up_widths:
            ups += [
                nn.ConvTranspose2d(cin, w, 4, 2, 1, bias=False),
                instance_norm(w),
                nn.ReLU(inplace=True),
            ]
            cin = w
        self.up = nn.Sequential(*ups)
        self.out = nn.Conv2d(cin, out_channels, 3, 1, 1, bias=False)
        _init_normal(self)

    def forward(
        self, expression: torch.Tensor, face: torch.Tensor, noise: torch.Tensor | None = None
    ) -> torch.Tensor:
        parts = [expression, face]
        if self.noise:
            if noise is None:
                n, _, h, w = face.shape
                noise = torch.rand(n, self.noise, h, w, device=face.device, dtype=face.dtype)
            parts.append(noise)
        h = self.blocks(self.embed(torch.cat(parts, 1)))
        return torch.sigmoid(self.out(self.up(h)))


class TDGAN(nn.Module):
    """The generator (face encoder, expression encoder, decoder) and the expression
    classifier on the expression branch: everything that is served.

    - `generate(face, expression)`: the generated face in [0, 1] (training);
    - `forward(face, expression)`: the same in [-1, 1] (the serving contract);
    - `classify(expression)`: expression logits from the expression branch.
    """

    def __init__(
        self,
        num_classes: int = 7,
        input_size: int = 48,
        in_channels: int = 1,
        widths: tuple[int, int, int] = DEFAULT_WIDTHS,
        fc: int = 1024,
        embed: int = 64,
        up_widths: tuple[int, ...] = DEFAULT_UP_WIDTHS,
        res_blocks: int = 6,
        noise: int = 128,
        pools: int = 3,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if input_size % 2**pools:
            raise ValueError(f"input_size must be a multiple of {2**pools}, got {input_size}")
        if len(up_widths) != pools:
            raise ValueError(f"need {pools} up_widths (one per max-pool), got {len(up_widths)}")
        widths = (int(widths[0]), int(widths[1]), int(widths[2]))
        self.input_size = input_size
        self.map_size = feature_size(input_size, pools)
        self.noise_channels = noise
        self.face_encoder = Encoder(in_channels, widths, pools=pools)
        self.expression_encoder = Encoder(in_channels, widths, pools=pools)
        self.decoder = Decoder(widths[2], noise, embed, res_blocks, tuple(up_widths), in_channels)
        self.classifier = FCHead(widths[2] * self.map_size**2, num_classes, fc, dropout)

    def generate(
        self, face: torch.Tensor, expression: torch.Tensor, noise: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The face of `face` wearing the expression of `expression`, in [0, 1]."""
        decoded: torch.Tensor = self.decoder(
            self.expression_encoder(expression), self.face_encoder(face), noise
        )
        return decoded

    def forward(self, face: torch.Tensor, expression: torch.Tensor) -> torch.Tensor:
        """`generate` mapped to [-1, 1] (what service/handlers/generator.py serves)."""
        return self.generate(face, expression) * 2 - 1

    def classify(self, expression: torch.Tensor) -> torch.Tensor:
        """Expression logits [N, classes] read by the expression branch."""
        logits: torch.Tensor = self.classifier(self.expression_encoder(expression))
        return logits


class Discriminator(nn.Module):
    """An encoder + FC head: returns (feature map, logits). The face discriminator has
    N identities + 1 "fake" classes; the expression discriminator has 7."""

    def __init__(
        self,
        num_classes: int,
        input_size: int = 48,
        in_channels: int = 1,
        widths: tuple[int, int, int] = DEFAULT_WIDTHS,
        fc: int = 1024,
        pools: int = 3,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        widths = (int(widths[0]), int(widths[1]), int(widths[2]))
        self.encoder = Encoder(in_channels, widths, pools=pools)
        self.head = FCHead(
            widths[2] * feature_size(input_size, pools) ** 2, num_classes, fc, dropout
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.encoder(x)
        return features, self.head(features)


#: The TDGAN arguments its discriminators share (they have no decoder and no noise).
DISCRIMINATOR_KWARGS = ("input_size", "in_channels", "widths", "fc", "pools")


def discriminator_kwargs(net_kwargs: dict[str, Any]) -> dict[str, Any]:
    """The `Discriminator` arguments that match a TDGAN built with `net_kwargs`."""
    return {k: net_kwargs[k] for k in DISCRIMINATOR_KWARGS if k in net_kwargs}


def build(**kwargs: object) -> TDGAN:
    """Factory used by handlers: `build(**metadata["net"]["kwargs"])`."""
    return TDGAN(**kwargs)  # type: ignore[arg-type]
