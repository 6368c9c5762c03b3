"""DeRL stage 1: the de-expression cGAN (expressive face -> neutral face of the same person).

L_cGAN(D) = mean{log D(I_in, I_tgt) + log(1 - D(I_in, G(I_in)))}
L_cGAN(G) = -mean{log D(I_in, G(I_in))} + theta1 * ||I_tgt - G(I_in)||_1
G* = arg min_G max_D  L(D) + theta2 * L(G)

Pairs come from CK+ (`training.data.ckplus.pairs`: same sequence, optionally same subject
across sequences); subjects of the held-out folds never enter training, so de-expression
quality can be measured on them. Every epoch writes `last.pt` and a sample grid
(input | generated neutral | real neutral) as PNG.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from training.data.augment import AugmentConfig, geometric
from training.data.samples import FaceSet
from training.nets.derl import DEFAULT_WIDTHS, Discriminator, Generator
from training.train import checkpoint

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
    threads: int = 0
    holdout_folds: tuple[int, ...] = ()
    cross_sequence: bool = True
    augment: AugmentConfig = field(
        default_factory=lambda: AugmentConfig(max_shift=0.04, max_rotation_deg=5, max_scale=0.05)
    )


def to_unit(images: np.ndarray) -> torch.Tensor:
    """uint8 [N,H,W] -> float [N,1,H,W] in [-1, 1] (the generator's range)."""
    return torch.from_numpy(np.ascontiguousarray(images)).float().div(127.5).sub(1).unsqueeze(1)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """Generator output in [-1, 1] -> uint8 [N,H,W]."""
    return ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().squeeze(1).numpy()


def save_grid(rows: list[np.ndarray], path: Path) -> None:
    """Columns: one per sample; rows: the given uint8 [N,H,W] stacks (input, fake, real)."""
    from PIL import Image

    grid = np.concatenate([np.concatenate(list(r), axis=1) for r in rows], axis=0)
    Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2)).save(path)


def de_expression_quality(gen: Generator, data: FaceSet, pairs: np.ndarray) -> dict[str, float]:
    """L1 (grey levels / 255) and SSIM of G(expressive) vs the real neutral, and the same
    for the identity baseline that outputs the expressive input unchanged."""
    from training.metrics import ssim

    gen.eval()
    with torch.inference_mode():
        x = to_unit(data.images[pairs[:, 0]])
        y = to_unit(data.images[pairs[:, 1]])
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


def train_gan(
    cfg: GanConfig,
    data: FaceSet,
    pairs: np.ndarray,
    out: Path,
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train G and D on (expressive, neutral) position pairs of `data`."""
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    size = int(data.images.shape[1])
    g = Generator(size, 1, tuple(cfg.widths), cfg.code)
    d = Discriminator(1)
    opt_g = torch.optim.Adam(g.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999))
    gen = torch.Generator().manual_seed(cfg.seed)
    history: list[dict[str, float]] = []
    start = 0
    if resume and (out / checkpoint.LAST).exists():
        state = checkpoint.load(out / checkpoint.LAST)
        g.load_state_dict(state["model"])
        d.load_state_dict(state["discriminator"])
        opt_g.load_state_dict(state["optimizer"])
        opt_d.load_state_dict(state["optimizer_d"])
        gen.set_state(state["rng"])
        history, start = state["history"], state["epoch"]
        log.info("resuming %s from epoch %d", out, start)

    x_all = to_unit(data.images)
    n = len(pairs)
    steps = max(1, n // cfg.batch_size)
    fixed = pairs[np.linspace(0, n - 1, min(8, n)).astype(int)]
    for epoch in range(start, cfg.epochs):
        g.train()
        d.train()
        order = torch.randperm(n, generator=gen)
        t0 = time.time()
        sums = {"loss_d": 0.0, "loss_g_gan": 0.0, "loss_g_l1": 0.0}
        bar = tqdm(
            range(steps), desc=f"gan {epoch + 1}/{cfg.epochs}", disable=not progress, leave=False
        )
        for b in bar:
            idx = pairs[order[b * cfg.batch_size : (b + 1) * cfg.batch_size].numpy()]
            # The same warp for input and target keeps the pair aligned.
            both = torch.cat([x_all[idx[:, 0]], x_all[idx[:, 1]]], 1)
            both = geometric((both + 1) / 2, cfg.augment, gen) * 2 - 1
            x_in, x_tgt = both[:, :1], both[:, 1:]
            fake = g(x_in)

            real_logit = d(x_in, x_tgt)
            fake_logit = d(x_in, fake.detach())
            loss_d = 0.5 * (
                F.binary_cross_entropy_with_logits(real_logit, torch.ones_like(real_logit))
                + F.binary_cross_entropy_with_logits(fake_logit, torch.zeros_like(fake_logit))
            )
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()

            fake_logit = d(x_in, fake)
            loss_gan = F.binary_cross_entropy_with_logits(fake_logit, torch.ones_like(fake_logit))
            loss_l1 = F.l1_loss(fake, x_tgt)
            loss_g = cfg.theta2 * (loss_gan + cfg.theta1 * loss_l1)
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            sums["loss_d"] += loss_d.item()
            sums["loss_g_gan"] += loss_gan.item()
            sums["loss_g_l1"] += loss_l1.item()
            bar.set_postfix(l1=f"{loss_l1.item():.3f}", d=f"{loss_d.item():.3f}")
        bar.close()
        row: dict[str, float] = {
            "epoch": epoch + 1,
            **{k: v / steps for k, v in sums.items()},
            "seconds": time.time() - t0,
        }
        history.append(row)
        g.eval()
        with torch.inference_mode():
            sample = to_uint8(g(x_all[fixed[:, 0]]))
        save_grid(
            [data.images[fixed[:, 0]], sample, data.images[fixed[:, 1]]],
            out / f"samples_{epoch + 1:03d}.png",
        )
        state = {
            "epoch": epoch + 1,
            "model": g.state_dict(),
            "discriminator": d.state_dict(),
            "optimizer": opt_g.state_dict(),
            "optimizer_d": opt_d.state_dict(),
            "rng": gen.get_state(),
            "config": {
                **asdict(cfg),
                "widths": list(cfg.widths),
                "holdout_folds": list(cfg.holdout_folds),
            },
            "generator": {
                "input_size": size,
                "in_channels": 1,
                "widths": list(cfg.widths),
                "code": cfg.code,
            },
            "history": history,
        }
        checkpoint.save(state, out / checkpoint.LAST)
        (out / "history.json").write_text(json.dumps(history, indent=1))
        msg = (
            f"gan epoch {epoch + 1}/{cfg.epochs} D {row['loss_d']:.3f} "
            f"G {row['loss_g_gan']:.3f} L1 {row['loss_g_l1']:.4f} ({row['seconds']:.0f}s)"
        )
        log.info(msg)
        if progress:
            print(msg, flush=True)
    return {"epochs": cfg.epochs, "history": history}
