"""Frontalization training (DR-GAN family two-path GAN), a method of the shared loop.

Pairs come from frontal faces (CK+ rows; their subjects are the identity classes) turned
on the device by the 3D-aware warp of `training/data/pose.py` to random yaw bins. Each
step, for a batch of frontal faces x0 and two random bins i and j per face:

- x_i = turn(x0, i), x_j = turn(x0, j); code = E(x_i);
- generation path: f = G(code, pose 0, z), compared with the true frontal x0;
- reconstruction path: r = G(code, pose j, z), compared with x_j;
- D learns identity (N classes + "fake"), pose and real/fake on x_i; f and r are "fake";
- G (E and the decoder) learns to make f and r pass as real, of the right identity and
  pose, plus lambda_l1 * (L1(f, x0) + L1(r, x_j)) (the pairs are known here, unlike in
  DR-GAN's Multi-PIE setting, so the L1 terms of pix2pix-style training are available).

Images are in [-1, 1]. Faces are flipped at random (a flipped face turned by y is the
mirror of the face turned by -y, so the pairs stay consistent). Adam 2e-4, beta1 0.5, as
DR-GAN and pix2pix. `frontalize_quality` measures L1/SSIM to the true frontal per yaw bin
on faces never trained on, beside the turned input itself.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from training import report
from training.data.pose import sampling_grid, turn_tensor
from training.data.samples import FaceSet
from training.data.tensors import to_device, to_float, to_uint8
from training.nets.frontalize import DEFAULT_WIDTHS, DEFAULT_YAWS, Discriminator, Frontalizer
from training.train.loop import Context, Method, RunOptions, fit

log = logging.getLogger(__name__)

LOW, HIGH = -1.0, 1.0


@dataclass
class FrontalizeConfig:
    """A frontalization run (saved in every checkpoint)."""

    epochs: int = 60
    batch_size: int = 32
    lr: float = 2e-4
    beta1: float = 0.5
    lambda_l1: float = 100.0  # each L1 term against the known target view (pix2pix's weight)
    widths: tuple[int, ...] = DEFAULT_WIDTHS
    code: int = 320
    noise: int = 50
    yaws: tuple[int, ...] = DEFAULT_YAWS
    seed: int = 0
    holdout_folds: tuple[int, ...] = ()
    framing: str = "fer2013"


def metadata(cfg: FrontalizeConfig, input_size: int) -> dict[str, Any]:
    """What the generator handler needs: one `face` crop in, its frontal view out."""
    return {
        "kind": "frontalizer",
        "classes": [],
        "input": {
            "size": input_size,
            "channels": 1,
            "color": "gray",
            "mean": 0.5,  # crops in [-1, 1]
            "std": 0.5,
            "framing": cfg.framing,
        },
        "inputs": ["face"],
        "yaws": list(cfg.yaws),
        "net": {"module": "frontalize", "file": "frontalize.py", "kwargs": _net_kwargs(cfg)},
    }


def _net_kwargs(cfg: FrontalizeConfig, input_size: int = 48) -> dict[str, Any]:
    return {
        "input_size": input_size,
        "widths": list(cfg.widths),
        "code": cfg.code,
        "noise": cfg.noise,
        "yaws": list(cfg.yaws),
    }


class FrontalizeMethod(Method):
    """E, G and D, their optimisers, the frontal faces and the yaw grids on the device."""

    name = "frontalize"
    must_match = ("identities",)

    def __init__(self, cfg: FrontalizeConfig, faces: FaceSet, ctx: Context) -> None:
        super().__init__(ctx)
        self.cfg, self.faces = cfg, faces
        device = ctx.device
        size = int(faces.images.shape[1])
        subjects = np.unique(faces.meta["subject"].astype(str))
        self.subjects = [str(s) for s in subjects]
        ids = np.searchsorted(subjects, faces.meta["subject"].astype(str))
        self.meta = metadata(cfg, size)
        self.g = Frontalizer(**_net_kwargs(cfg, size)).to(device)
        self.d = Discriminator(len(subjects), size, 1, cfg.widths, len(cfg.yaws)).to(device)
        self.parameters = sum(p.numel() for p in self.g.parameters())
        betas = (cfg.beta1, 0.999)
        fused = ctx.fused or None
        self.opt_g = torch.optim.Adam(self.g.parameters(), lr=cfg.lr, betas=betas, fused=fused)
        self.opt_d = torch.optim.Adam(self.d.parameters(), lr=cfg.lr, betas=betas, fused=fused)
        ctx.compile(self.g, self.d)
        self.images = to_device(faces.images, device)
        self.ids = torch.from_numpy(ids.astype(np.int64)).to(device)
        self.grids = torch.stack([sampling_grid(y, size) for y in cfg.yaws]).to(device)
        self.front = cfg.yaws.index(0)
        self.n = len(faces)
        self.epochs = cfg.epochs
        self.steps_per_epoch = max(1, self.n // cfg.batch_size)
        self.order = torch.arange(self.n, device=device)
        self.fixed = np.linspace(0, self.n - 1, min(8, self.n)).astype(int)

    def config(self) -> dict[str, Any]:
        d = asdict(self.cfg)
        for k in ("widths", "yaws", "holdout_folds"):
            d[k] = list(d[k])
        return d

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
        return {"metadata": self.meta, "identities": self.subjects, "parameters": self.parameters}

    def begin_epoch(self, epoch: int) -> None:
        self.order = torch.randperm(self.n, generator=self.ctx.gen, device=self.ctx.device)

    def step(self, step: int, index: int) -> dict[str, torch.Tensor]:
        cfg, g, d, gen, dev = self.cfg, self.g, self.d, self.ctx.gen, self.ctx.device
        idx = self.order[index * cfg.batch_size : (index + 1) * cfg.batch_size]
        b = len(idx)
        x0 = to_float(self.images[idx], LOW, HIGH)
        flip = torch.rand(b, generator=gen, device=dev) < 0.5
        x0 = torch.where(flip[:, None, None, None], x0.flip(3), x0)
        bins = len(cfg.yaws)
        bi = torch.randint(bins, (b,), generator=gen, device=dev)
        bj = torch.randint(bins, (b,), generator=gen, device=dev)
        xi, xj = turn_tensor(x0, self.grids[bi]), turn_tensor(x0, self.grids[bj])
        y = self.ids[idx]
        front = torch.full_like(bi, self.front)
        z = torch.rand(b, cfg.noise, generator=gen, device=dev) * 2 - 1
        fake_id = torch.full_like(y, len(self.subjects))

        with self.ctx.autocast():
            code = g.encoder(xi)
            f = g.decode(code, g.pose_code(front), z).float()
            r = g.decode(code, g.pose_code(bj), z).float()
            real_id, real_pose, real_rf = (t.float() for t in d(xi))
            fakes = torch.cat([f, r]).detach()
            fake_id_logits, _, fake_rf = (t.float() for t in d(fakes))
        loss_d = (
            F.cross_entropy(real_id, y)
            + F.cross_entropy(real_pose, bi)
            + F.binary_cross_entropy_with_logits(real_rf, torch.ones_like(real_rf))
            + F.cross_entropy(fake_id_logits, torch.cat([fake_id, fake_id]))
            + F.binary_cross_entropy_with_logits(fake_rf, torch.zeros_like(fake_rf))
        )
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()

        for p in d.parameters():
            p.requires_grad_(False)
        with self.ctx.autocast():
            g_id, g_pose, g_rf = (t.float() for t in d(torch.cat([f, r])))
        for p in d.parameters():
            p.requires_grad_(True)
        loss_adv = (
            F.cross_entropy(g_id, torch.cat([y, y]))
            + F.cross_entropy(g_pose, torch.cat([front, bj]))
            + F.binary_cross_entropy_with_logits(g_rf, torch.ones_like(g_rf))
        )
        loss_l1_front = F.l1_loss(f, x0)
        loss_l1_pose = F.l1_loss(r, xj)
        loss_g = loss_adv + cfg.lambda_l1 * (loss_l1_front + loss_l1_pose)
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        return {
            "loss_d": loss_d.detach(),
            "loss_g": loss_g.detach(),
            "loss_g_adversarial": loss_adv.detach(),
            "loss_l1_frontal": loss_l1_front.detach(),
            "loss_l1_reconstruction": loss_l1_pose.detach(),
        }

    @torch.inference_mode()
    def frontalize(self, x: torch.Tensor) -> torch.Tensor:
        """The frontal views of crops in [-1, 1] (eval mode, no noise)."""
        self.g.eval()
        out = torch.cat([self.g(x[i : i + 256]) for i in range(0, len(x), 256)])
        self.g.train()
        return out

    def reports(self, out: Path, step: int, history: list[dict[str, Any]]) -> None:
        """Rows: the face turned to -45, -15, +30 and +60 (or the bins nearest), each
        frontalized, then the true frontal face."""
        x0 = to_float(self.faces.images[self.fixed], LOW, HIGH).to(self.ctx.device)
        columns = []
        for want in (-45, -15, 30, 60):
            k = int(np.argmin([abs(y - want) for y in self.cfg.yaws]))
            turned = turn_tensor(x0, self.grids[k].expand(len(x0), -1, -1, -1))
            columns += [to_uint8(turned, LOW, HIGH), to_uint8(self.frontalize(turned), LOW, HIGH)]
        columns.append(self.faces.images[self.fixed])
        report.save_grid(columns, out / f"samples_{step:06d}.png")
        report.plot_losses(history, out / "losses.png")


def _unit(t: torch.Tensor) -> torch.Tensor:
    return (t.clamp(-1, 1) + 1) / 2


def frontalize_quality(
    model: Frontalizer, faces: FaceSet, yaws: tuple[int, ...] = (0, 15, 30, 45, 60)
) -> dict[str, Any]:
    """L1 (grey levels / 255) and SSIM of the frontalized turned faces against the true
    frontal faces, per yaw, beside the turned input itself (the do-nothing baseline)."""
    from training.metrics import ssim

    size = int(faces.images.shape[1])
    x0 = to_float(faces.images, LOW, HIGH)
    model.eval()
    rows = {}
    with torch.inference_mode():
        for yaw in yaws:
            turned = turn_tensor(x0, sampling_grid(yaw, size).expand(len(x0), -1, -1, -1))
            out = torch.cat([model(turned[i : i + 256]) for i in range(0, len(x0), 256)])
            rows[str(yaw)] = {
                "l1": float((_unit(out) - _unit(x0)).abs().mean()),
                "ssim": float(ssim(_unit(out), _unit(x0)).mean()),
                "l1_turned_input": float((_unit(turned) - _unit(x0)).abs().mean()),
                "ssim_turned_input": float(ssim(_unit(turned), _unit(x0)).mean()),
            }
    return {"faces": len(faces), "per_yaw": rows}


def train_frontalize(
    cfg: FrontalizeConfig,
    faces: FaceSet,
    out: Path,
    resume: bool = False,
    opts: RunOptions | None = None,
) -> dict[str, Any]:
    """Train on frontal `faces` (with a `subject` column: the identities)."""
    opts = opts or RunOptions()
    method = FrontalizeMethod(cfg, faces, Context(opts, cfg.seed))
    return fit(method, opts, out, resume=resume)
