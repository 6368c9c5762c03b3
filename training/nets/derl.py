"""DeRL: De-expression Residue Learning (Yang, Ciftci, Yin, CVPR 2018).

A conditional GAN generator turns an expressive face into the neutral face of the same
person. Its filters are then frozen, and the expression is read from what the generator
keeps in its intermediate layers: encoder and decoder layers of the same size are
concatenated, each of the 4 sizes feeds its own local CNN (loss_1..loss_4), and the last
FC layers of the 4 local CNNs are concatenated with the last encoding layer into the final
classifier (loss_5). Total loss = sum_i lambda_i * loss_i.

Choices the paper leaves open (and why), for 48x48 grayscale input:
- Generator: an encoder-decoder in the pix2pix style (conv 4x4 stride 2, batch norm,
  LeakyReLU 0.2 in the encoder; transposed conv 4x4 stride 2, batch norm, ReLU, dropout
  on the inner decoder layers). No U-Net skips: the paper reads the residue from separate
  encoder and decoder layers, and skips would let the decoder copy the expression through.
  Encoder sizes 24, 12, 6, 3 then a 3x3 valid conv to a 1x1 code (the "last encoding
  layer"); the decoder mirrors it, so the 4 sizes 24/12/6/3 have one encoder and one
  decoder layer each. Widths (32, 64, 128, 256), code 256: sized for a CPU budget.
- Discriminator: a PatchGAN on (input, candidate) concatenated on channels, 3 convs
  (32, 64, 128) to a 6x6 map of real/fake logits.
- theta1 (L1 weight inside L_G) = 100 as in pix2pix, theta2 = 1.
- Local CNNs start with batch norm (the frozen encoder and decoder maps differ in scale by
  orders of magnitude; so does the code, normalised before the final classifier). Then
  conv 3x3 + BN + ReLU blocks with max-pooling down to 3x3, then FC 256 with dropout 0.5
  and a linear head; lambda_1..4 = 0.5, lambda_5 = 1 (the final classifier is what is
  served; the local losses are deep supervision). `local_width` (64) and `local_convs`
  (convs per pooling stage, 1) set their capacity: the largest map (24x24) carries nearly
  all of the image, so its local CNN is where capacity pays. `local_growth` (1) multiplies
  the channels after every pooling, as VGG does (2: 64 -> 128 -> 256 -> 512 on the 24x24
  path), which adds capacity on the small maps for about the cost of one more stage.
"""

from __future__ import annotations

import torch
from torch import nn

DEFAULT_WIDTHS = (32, 64, 128, 256)


def _down(cin: int, cout: int, norm: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 4, 2, 1, bias=not norm)]
    if norm:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.LeakyReLU(0.2, inplace=True))
    return nn.Sequential(*layers)


def _up(cin: int, cout: int, dropout: float = 0.0) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]
    if dropout:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class Generator(nn.Module):
    """Expressive face in [-1, 1] -> neutral face in [-1, 1]; also returns its layers."""

    def __init__(
        self,
        input_size: int = 48,
        in_channels: int = 1,
        widths: tuple[int, ...] = DEFAULT_WIDTHS,
        code: int = 256,
    ) -> None:
        super().__init__()
        if input_size % 16:
            raise ValueError(f"input_size must be a multiple of 16, got {input_size}")
        w1, w2, w3, w4 = widths
        self.input_size = input_size
        self.widths = tuple(widths)
        self.code_size = code
        bottom = input_size // 16
        self.enc = nn.ModuleList(
            [_down(in_channels, w1, norm=False), _down(w1, w2), _down(w2, w3), _down(w3, w4)]
        )
        self.to_code = nn.Sequential(nn.Conv2d(w4, code, bottom), nn.ReLU(inplace=True))
        self.from_code = nn.Sequential(
            nn.ConvTranspose2d(code, w4, bottom, bias=False), nn.BatchNorm2d(w4), nn.ReLU(True)
        )
        self.dec = nn.ModuleList(
            [
                _up(w4, w3, 0.5),
                _up(w3, w2, 0.5),
                _up(w2, w1),
                nn.ConvTranspose2d(w1, in_channels, 4, 2, 1),
            ]
        )

    def forward_features(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """(neutral face, [4 concatenated encoder/decoder maps, largest first], code)."""
        enc = []
        h = x
        for layer in self.enc:
            h = layer(h)
            enc.append(h)  # sizes S/2, S/4, S/8, S/16
        code = self.to_code(h)
        h = self.from_code(code)
        dec = [h]  # S/16
        for layer in self.dec[:-1]:
            h = layer(h)
            dec.append(h)  # S/8, S/4, S/2
        out = torch.tanh(self.dec[-1](h))
        dec = dec[::-1]  # S/2, S/4, S/8, S/16
        pairs = [torch.cat([e, d], 1) for e, d in zip(enc, dec, strict=True)]
        return out, pairs, code.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[0]


class Discriminator(nn.Module):
    """PatchGAN judging (input, candidate neutral) pairs; returns a map of logits."""

    def __init__(self, in_channels: int = 1, widths: tuple[int, int, int] = (32, 64, 128)) -> None:
        super().__init__()
        a, b, c = widths
        self.net = nn.Sequential(
            _down(2 * in_channels, a, norm=False),
            _down(a, b),
            nn.Conv2d(b, c, 3, 1, 1, bias=False),
            nn.BatchNorm2d(c),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(c, 1, 3, 1, 1),
        )

    def forward(self, face: torch.Tensor, candidate: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([face, candidate], 1))


class LocalCNN(nn.Module):
    """Reads one concatenated encoder/decoder map; returns (features, logits)."""

    def __init__(
        self,
        channels: int,
        size: int,
        num_classes: int,
        width: int,
        fc: int,
        dropout: float = 0.5,
        convs: int = 1,
        growth: int = 1,
    ) -> None:
        super().__init__()
        # The frozen encoder and decoder maps come at very different scales: normalise first.
        layers: list[nn.Module] = [nn.BatchNorm2d(channels)]
        cin = channels
        while size > 3:
            for _ in range(convs):
                layers += [
                    nn.Conv2d(cin, width, 3, padding=1, bias=False),
                    nn.BatchNorm2d(width),
                    nn.ReLU(inplace=True),
                ]
                cin = width
            layers.append(nn.MaxPool2d(2))
            size //= 2
            width *= growth  # VGG-style: more channels on smaller maps, same cost per stage
        layers += [
            nn.Conv2d(cin, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        ]
        self.conv = nn.Sequential(*layers)
        self.fc = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(width * size * size, fc),
            nn.ReLU(inplace=True),
        )
        self.head = nn.Linear(fc, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.fc(self.conv(x))
        return f, self.head(f)


class DeRL(nn.Module):
    """Frozen generator + 4 local CNNs + final classifier.

    `forward` returns the final logits; `forward_all` returns (final logits, [4 local
    logits], generated neutral face) for training and for the neutral-face output.
    """

    def __init__(
        self,
        num_classes: int = 7,
        input_size: int = 48,
        in_channels: int = 1,
        widths: tuple[int, ...] = DEFAULT_WIDTHS,
        code: int = 256,
        local_width: int = 64,
        local_fc: int = 256,
        dropout: float = 0.5,
        local_convs: int = 1,
        local_growth: int = 1,
    ) -> None:
        super().__init__()
        self.generator = Generator(input_size, in_channels, widths, code)
        sizes = [input_size // 2, input_size // 4, input_size // 8, input_size // 16]
        self.locals = nn.ModuleList(
            [
                LocalCNN(
                    2 * w,
                    s,
                    num_classes,
                    local_width,
                    local_fc,
                    convs=local_convs,
                    growth=local_growth,
                )
                for w, s in zip(widths, sizes, strict=True)
            ]
        )
        self.code_norm = nn.BatchNorm1d(code)
        self.final = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(4 * local_fc + code, local_fc),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(local_fc, num_classes),
        )

    def freeze_generator(self) -> None:
        """Stage 2: the generator's filters (and batch-norm statistics) stay fixed."""
        for p in self.generator.parameters():
            p.requires_grad_(False)
        self.generator.eval()

    def train(self, mode: bool = True) -> DeRL:
        super().train(mode)
        if not any(p.requires_grad for p in self.generator.parameters()):
            self.generator.eval()  # frozen: keep BN statistics and dropout off
        return self

    def forward_all(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        neutral, pairs, code = self.generator.forward_features(x)
        feats, local_logits = [], []
        for cnn, m in zip(self.locals, pairs, strict=True):
            f, logit = cnn(m)
            feats.append(f)
            local_logits.append(logit)
        final = self.final(torch.cat([*feats, self.code_norm(code)], 1))
        return final, local_logits, neutral

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_all(x)[0]


def build(**kwargs: object) -> DeRL:
    """Factory used by handlers: `build(**metadata["net"]["kwargs"])`."""
    return DeRL(**kwargs)  # type: ignore[arg-type]
