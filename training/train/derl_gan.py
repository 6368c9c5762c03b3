"""DeRL stage 1: the de-expression cGAN (expressive face -> neutral face of the same person).

L_cGAN(D) = mean{log D(I_in, I_tgt) + log(1 - D(I_in, G(I_in)))}
L_cGAN(G) = -mean{log D(I_in, G(I_in))} + theta1 * ||I_tgt - G(I_in)||_1
G* = arg min_G max_D  L(D) + theta2 * L(G)

Pairs come from CK+ (`training.data.ckplus.pairs`: same sequence, optionally same subject
across sequences); subjects of the held-out folds never enter training, so de-expression
quality can be measured on them. A set without neutral/expressive pairs (FER2013) can
pre-train the generator by reconstruction (`self_pairs`: every image its own target), so
that a DeRL pre-trained on it never saw CK+; `GanConfig.init` then starts a CK+ run from
that generator. A method of the shared training loop: every epoch
writes `last.pt` and a sample grid (rows of input | generated neutral | real neutral).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from training import report
from training.data.augment import AugmentConfig, geometric
from training.data.samples import FaceSet
from training.data.tensors import to_device, to_float, to_uint8
from training.nets.derl import DEFAULT_WIDTHS, Discriminator, Generator
from training.train import checkpoint
from training.train.loop import Context, Method, RunOptions, fit

log = logging.getLogger(__name__)


@dataclass
class GanConfig:
    """A stage-1 run (saved in every checkpoint)."""

    epochs: int = 150
    batch_size: int = 32
    lr: float = 2e-4
    beta1: float = 0.5
    theta1: float = 100.0  # L1 weight inside L(G) (pix2pix's lambda_L1)
    theta2: float = 1.0  # weight of L(G) against L(D)
    widths: tuple[int, ...] = DEFAULT_WIDTHS
    code: int = 256
    seed: int = 0
    holdout_folds: tuple[int, ...] = ()
    cross_sequence: bool = True
    targets: str = "neutral"  # "neutral": CK+ de-expression pairs; "self": reconstruction
    init: str = ""  # start G from this generator (derl-gan or DeRL checkpoint, or a .mar)
    augment: AugmentConfig = field(
        default_factory=lambda: AugmentConfig(max_shift=0.04, max_rotation_deg=5, max_scale=0.05)
    )


def self_pairs(n: int) -> np.ndarray:
    """(i, i) for every image: the generator learns to reconstruct its input."""
    index = np.arange(n, dtype=np.int64)
    return np.stack([index, index], 1)


def generator_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The generator's state_dict from a stage-1 checkpoint, or from a DeRL stage-2
    checkpoint or `.mar` (its frozen `generator.*`)."""
    weights = checkpoint.load_weights(path)
    prefix = "generator."
    if any(k.startswith(prefix) for k in weights):
        return {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}
    return weights


#: The generator's value range.
LOW, HIGH = -1.0, 1.0


def de_expression_quality(gen: Generator, data: FaceSet, pairs: np.ndarray) -> dict[str, float]:
    """L1 (grey levels / 255) and SSIM of G(expressive) vs the real neutral, and the same
    for the identity baseline that outputs the expressive input unchanged."""
    from training.metrics import ssim

    gen.eval()
    with torch.inference_mode():
        x = to_float(data.images[pairs[:, 0]], LOW, HIGH)
        y = to_float(data.images[pairs[:, 1]], LOW, HIGH)
        fake = torch.cat([gen(x[i : i + 256]) for i in range(0, len(x), 256)])

    def unit01(t: torch.Tensor) -> torch.Tensor:
        return (t.clamp(-1, 1) + 1) / 2

    return {
        "pairs": int(len(pairs)),
        "l1": float((unit01(fake) - unit01(y)).abs().mean()),
        "l1_identity": float((unit01(x) - unit01(y)).abs().mean()),
        "ssim": float(ssim(unit01(fake), unit01(y)).mean()),
        "ssim_identity": float(ssim(unit01(x), unit01(y)).mean()),
    }


class GanMethod(Method):
    """G and D, their optimisers, the pairs' images on the device and one step."""

    name = "derl-gan"

    def __init__(self, cfg: GanConfig, data: FaceSet, pairs: np.ndarray, ctx: Context) -> None:
        super().__init__(ctx)
        self.cfg, self.data = cfg, data
        device = ctx.device
        size = int(data.images.shape[1])
        self.g_kwargs = {
            "input_size": size,
            "in_channels": 1,
            "widths": list(cfg.widths),
            "code": cfg.code,
        }
        self.g = Generator(size, 1, tuple(cfg.widths), cfg.code)
        if cfg.init:
            self.g.load_state_dict(generator_weights(cfg.init))
        self.g.to(device)
        self.d = Discriminator(1).to(device)
        betas = (cfg.beta1, 0.999)
        fused = ctx.fused or None
        self.opt_g = torch.optim.Adam(self.g.parameters(), lr=cfg.lr, betas=betas, fused=fused)
        self.opt_d = torch.optim.Adam(self.d.parameters(), lr=cfg.lr, betas=betas, fused=fused)
        ctx.compile(self.g, self.d)
        self.images = to_device(data.images, device)
        self.pairs = torch.from_numpy(pairs.astype(np.int64)).to(device)
        self.epochs = cfg.epochs
        self.steps_per_epoch = max(1, len(pairs) // cfg.batch_size)
        self.order = torch.arange(len(pairs), device=device)
        n = len(pairs)
        self.fixed = pairs[np.linspace(0, n - 1, min(8, n)).astype(int)]

    def config(self) -> dict[str, Any]:
        cfg = self.cfg
        return {
            **asdict(cfg),
            "widths": list(cfg.widths),
            "holdout_folds": list(cfg.holdout_folds),
        }

    def networks(self) -> list[nn.Module]:
        return [self.g, self.d]

    def stateful(self) -> dict[str, Any]:
        return {
            "model": self.g,
            "discriminator": self.d,
            "optimizer": self.opt_g,
            "optimizer_d": self.opt_d,
        }

    def extra_state(self) -> dict[str, Any]:
        return {"generator": self.g_kwargs}

    def begin_epoch(self, epoch: int) -> None:
        n = len(self.pairs)
        self.order = torch.randperm(n, generator=self.ctx.gen, device=self.ctx.device)

    def step(self, step: int, index: int) -> dict[str, torch.Tensor]:
        cfg, g, d = self.cfg, self.g, self.d
        idx = self.pairs[self.order[index * cfg.batch_size : (index + 1) * cfg.batch_size]]
        # The same warp for input and target keeps the pair aligned.
        both = torch.cat([self.images[idx[:, 0]], self.images[idx[:, 1]]], 1).float().div_(255)
        both = geometric(both, cfg.augment, self.ctx.gen) * (HIGH - LOW) + LOW
        x_in, x_tgt = both[:, :1], both[:, 1:]
        with self.ctx.autocast():
            fake = g(x_in)
            real_logit = d(x_in, x_tgt).float()
            fake_logit = d(x_in, fake.detach()).float()
        loss_d = 0.5 * (
            F.binary_cross_entropy_with_logits(real_logit, torch.ones_like(real_logit))
            + F.binary_cross_entropy_with_logits(fake_logit, torch.zeros_like(fake_logit))
        )
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()

        with self.ctx.autocast():
            fake_logit = d(x_in, fake).float()
        loss_gan = F.binary_cross_entropy_with_logits(fake_logit, torch.ones_like(fake_logit))
        loss_l1 = F.l1_loss(fake.float(), x_tgt)
        loss_g = cfg.theta2 * (loss_gan + cfg.theta1 * loss_l1)
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        return {
            "loss_d": loss_d.detach(),
            "loss_g_gan": loss_gan.detach(),
            "loss_g_l1": loss_l1.detach(),
        }

    def reports(self, out: Path, step: int, history: list[dict[str, Any]]) -> None:
        images = self.data.images
        self.g.eval()
        with torch.inference_mode():
            x = to_float(images[self.fixed[:, 0]], LOW, HIGH).to(self.ctx.device)
            sample = to_uint8(self.g(x), LOW, HIGH)
        self.g.train()
        columns = [images[self.fixed[:, 0]], sample, images[self.fixed[:, 1]]]
        report.save_grid(columns, out / f"samples_{step:06d}.png")
        report.plot_losses(history, out / "losses.png")


def train_gan(
    cfg: GanConfig,
    data: FaceSet,
    pairs: np.ndarray,
    out: Path,
    resume: bool = False,
    opts: RunOptions | None = None,
) -> dict[str, Any]:
    """Train G and D on (expressive, neutral) position pairs of `data`."""
    opts = opts or RunOptions()
    method = GanMethod(cfg, data, pairs, Context(opts, cfg.seed))
    return fit(method, opts, out, resume=resume)
