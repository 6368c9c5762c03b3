"""A face-identity embedding, trained only to judge generated faces.

Expression transfer must keep the person of the face image. To measure that without
trusting the GAN's own face discriminator, a separate small network learns to tell the
subjects of a training set apart (a compact CNN with one output per subject); its last
hidden FC layer, L2-normalised, is the embedding. It is then used on people it never saw
(held-out CK+ subjects), so `identification` reports how well it tells those people apart
on their real images: the reference for the same figure on generated faces.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from training.data.augment import AugmentConfig, augment
from training.data.samples import FaceSet
from training.data.tensors import to_device, to_float
from training.nets.compact import CompactCNN
from training.train import checkpoint
from training.train.loop import Context, Method, RunOptions, fit

MEAN, STD = 0.5, 0.25


@dataclass
class IdentityConfig:
    """An identity-embedding training run (saved in its checkpoint)."""

    epochs: int = 40
    batch_size: int = 64
    lr: float = 0.05
    weight_decay: float = 5e-4
    widths: tuple[int, int] = (16, 32)
    fc: int = 128
    dropout: float = 0.3
    seed: int = 0
    augment: AugmentConfig = field(
        default_factory=lambda: AugmentConfig(max_shift=0.06, max_rotation_deg=6, max_scale=0.06)
    )


def subject_labels(data: FaceSet) -> tuple[list[str], np.ndarray]:
    """Sorted subjects and each row's subject index."""
    subjects = np.unique(data.meta["subject"].astype(str))
    return [str(s) for s in subjects], np.searchsorted(subjects, data.meta["subject"].astype(str))


def _normalise(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    return (to_float(images) - MEAN) / STD


class IdentityMethod(Method):
    """A compact CNN with one output per subject, SGD with a cosine schedule."""

    name = "identity"

    def __init__(self, cfg: IdentityConfig, data: FaceSet, ctx: Context) -> None:
        super().__init__(ctx)
        self.cfg = cfg
        device = ctx.device
        self.subjects, ids = subject_labels(data)
        self.net_kwargs: dict[str, Any] = {
            "num_classes": len(self.subjects),
            "input_size": int(data.images.shape[1]),
            "widths": list(cfg.widths),
            "kernels": [3, 3],
            "fc": cfg.fc,
            "dropout": cfg.dropout,
        }
        self.model = CompactCNN(**self.net_kwargs).to(device)
        self.opt = torch.optim.SGD(
            self.model.parameters(),
            lr=cfg.lr,
            momentum=0.9,
            nesterov=True,
            weight_decay=cfg.weight_decay,
        )
        self.n = len(data)
        self.epochs = cfg.epochs
        self.steps_per_epoch = max(1, math.ceil(self.n / cfg.batch_size))
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.opt, cfg.epochs * self.steps_per_epoch
        )
        ctx.compile(self.model)
        self.images = to_device(data.images, device)
        self.labels = torch.from_numpy(ids.astype(np.int64)).to(device)
        self.order = torch.arange(self.n, device=device)

    def config(self) -> dict[str, Any]:
        return {**asdict(self.cfg), "widths": list(self.cfg.widths)}

    def networks(self) -> list[nn.Module]:
        return [self.model]

    def stateful(self) -> dict[str, Any]:
        return {"model": self.model, "optimizer": self.opt, "scheduler": self.sched}

    def extra_state(self) -> dict[str, Any]:
        return {"net_kwargs": self.net_kwargs, "subjects": self.subjects}

    def begin_epoch(self, epoch: int) -> None:
        self.order = torch.randperm(self.n, generator=self.ctx.gen, device=self.ctx.device)

    def step(self, step: int, index: int) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        idx = self.order[index * cfg.batch_size : (index + 1) * cfg.batch_size]
        x = augment(self.images[idx].float().div_(255), cfg.augment, self.ctx.gen)
        y = self.labels[idx]
        with self.ctx.autocast():
            logits = self.model((x - MEAN) / STD)
        loss = F.cross_entropy(logits.float(), y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.sched.step()
        return {
            "train_loss": loss.detach(),
            "train_acc": (logits.detach().argmax(1) == y).float().mean(),
        }


def train_identity(
    cfg: IdentityConfig,
    data: FaceSet,
    out: Path,
    resume: bool = False,
    opts: RunOptions | None = None,
) -> dict[str, Any]:
    """Train on every image of `data` (labels: its subjects); a finished run writes
    `out/identity.pt` (the embedding `Embedder.load` reads). Returns the last history row
    with the loop's `stopped`."""
    opts = opts or RunOptions()
    method = IdentityMethod(cfg, data, Context(opts, cfg.seed))
    result = fit(method, opts, out, resume=resume)
    if result["stopped"] == "done":
        state = {**method.state(), "config": method.config(), "history": result["history"]}
        checkpoint.save(state, out / "identity.pt")
    last = result["history"][-1] if result["history"] else {}
    return {**last, "stopped": result["stopped"]}


class Embedder:
    """uint8 faces [N,H,W] -> L2-normalised identity embeddings [N, fc]."""

    def __init__(self, state: dict[str, Any]) -> None:
        self.model = CompactCNN(**state["net_kwargs"])
        self.model.load_state_dict(state["model"])
        self.model.eval()

    @classmethod
    def load(cls, path: str | Path) -> Embedder:
        return cls(checkpoint.load(path))

    @torch.inference_mode()
    def __call__(self, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
        hidden = self.model.classifier[:-1]  # up to the last hidden FC layer and its ReLU
        out = [
            F.normalize(hidden(self.model.features(_normalise(images[i : i + batch_size]))), dim=1)
            for i in range(0, len(images), batch_size)
        ]
        return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


def identification(embed: Embedder, data: FaceSet) -> dict[str, float]:
    """How well the embedding tells the (unseen) subjects of `data` apart on real images:
    each image against leave-one-out per-subject mean embeddings (rank-1 rate), and the
    mean cosine similarity to the own subject vs to other subjects."""
    _, ids = subject_labels(data)
    e = embed(data.images)
    sims = subject_similarities(e, e, ids, leave_one_out=True)
    return identity_figures(sims, ids)


def subject_similarities(
    queries: np.ndarray, gallery: np.ndarray, gallery_ids: np.ndarray, leave_one_out: bool
) -> np.ndarray:
    """Cosine similarity [Q, S] of each query to each subject's mean gallery embedding;
    with `leave_one_out` (queries are the gallery), a query is left out of its own mean."""
    s = int(gallery_ids.max()) + 1
    sums = np.zeros((s, gallery.shape[1]), np.float64)
    np.add.at(sums, gallery_ids, gallery)
    counts = np.bincount(gallery_ids, minlength=s).astype(np.float64)
    if not leave_one_out:
        means = sums / counts[:, None]
        means /= np.linalg.norm(means, axis=1, keepdims=True) + 1e-12
        return np.asarray(queries @ means.T)
    out = np.empty((len(queries), s))
    for i, q in enumerate(queries):
        own = gallery_ids[i]
        m = sums.copy()
        m[own] -= gallery[i]
        c = counts.copy()
        c[own] -= 1
        valid = c > 0
        m[valid] /= c[valid, None]
        m /= np.linalg.norm(m, axis=1, keepdims=True) + 1e-12
        out[i] = m @ q
        out[i, ~valid] = -np.inf
    return out


def identity_figures(sims: np.ndarray, ids: np.ndarray) -> dict[str, float]:
    rows = np.arange(len(ids))
    own = sims[rows, ids]
    finite = np.isfinite(sims)
    finite[rows, ids] = False
    others = np.where(finite, sims, 0).sum(1) / np.maximum(finite.sum(1), 1)
    return {
        "rank1": float(np.mean(sims.argmax(1) == ids)),
        "chance": 1.0 / sims.shape[1],
        "similarity_own": float(own.mean()),
        "similarity_others": float(others.mean()),
        "n": len(ids),
        "subjects": int(sims.shape[1]),
    }
