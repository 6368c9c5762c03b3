"""A face-identity embedding, trained only to judge generated faces.

Expression transfer must keep the person of the face image. To measure that without
trusting the GAN's own face discriminator, a separate small network learns to tell the
subjects of a training set apart (a compact CNN with one output per subject); its last
hidden FC layer, L2-normalised, is the embedding. It is then used on people it never saw
(held-out CK+ subjects), so `identification` reports how well it tells those people apart
on their real images: the reference for the same figure on generated faces.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from training.data.augment import AugmentConfig, augment
from training.data.samples import FaceSet
from training.nets.compact import CompactCNN
from training.train import checkpoint

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
    threads: int = 0
    augment: AugmentConfig = field(
        default_factory=lambda: AugmentConfig(max_shift=0.06, max_rotation_deg=6, max_scale=0.06)
    )


def subject_labels(data: FaceSet) -> tuple[list[str], np.ndarray]:
    """Sorted subjects and each row's subject index."""
    subjects = np.unique(data.meta["subject"].astype(str))
    return [str(s) for s in subjects], np.searchsorted(subjects, data.meta["subject"].astype(str))


def _normalise(images: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div(255).unsqueeze(1)
    return (x - MEAN) / STD


def train_identity(
    cfg: IdentityConfig, data: FaceSet, out: Path, progress: bool = True
) -> dict[str, Any]:
    """Train on every image of `data` (labels: its subjects); writes `out/identity.pt`."""
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    subjects, ids = subject_labels(data)
    size = int(data.images.shape[1])
    net_kwargs: dict[str, Any] = {
        "num_classes": len(subjects),
        "input_size": size,
        "widths": list(cfg.widths),
        "kernels": [3, 3],
        "fc": cfg.fc,
        "dropout": cfg.dropout,
    }
    model = CompactCNN(**net_kwargs)
    opt = torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay
    )
    steps = max(1, math.ceil(len(data) / cfg.batch_size))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.epochs * steps)
    gen = torch.Generator().manual_seed(cfg.seed)
    images = torch.from_numpy(data.images).unsqueeze(1)
    labels = torch.from_numpy(ids.astype(np.int64))
    history: list[dict[str, float]] = []
    for epoch in tqdm(range(cfg.epochs), desc="identity", disable=not progress, leave=False):
        model.train()
        order = torch.randperm(len(data), generator=gen)
        correct, total_loss = 0, 0.0
        for b in range(steps):
            idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            x = (augment(images[idx].float().div(255), cfg.augment, gen) - MEAN) / STD
            logits = model(x)
            loss = F.cross_entropy(logits, labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total_loss += loss.item() * len(idx)
            correct += int((logits.argmax(1) == labels[idx]).sum())
        history.append(
            {
                "epoch": epoch + 1,
                "train_loss": total_loss / len(data),
                "train_acc": correct / len(data),
            }
        )
    state = {
        "model": model.state_dict(),
        "net_kwargs": net_kwargs,
        "subjects": subjects,
        "config": asdict(cfg),
        "history": history,
        "epoch": cfg.epochs,
    }
    checkpoint.save(state, out / "identity.pt")
    (out / "history.json").write_text(json.dumps(history, indent=1))
    return history[-1]


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
