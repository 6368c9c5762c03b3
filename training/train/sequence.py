"""The frame-to-sequence model (training/nets/sequence.py) as a method of the shared
training loop: a GRU head over the frozen features of a trained frame classifier.

The backbone comes from a trained compact archive or checkpoint (`backbone`) and stays
frozen, so the features of every frame of the training pool are computed once, on the
device, at the start (and again on resume: they are a pure function of the backbone).
Training sequences are CK+ sequences of the training folds, interpolated onsets between
their neutral and peak frames, and synthetic onsets (training/data/sequences.py); each
step draws a batch of them, keeps a random window that ends at the sequence's last frame
(length 1 to all of it), and fits the GRU and head with Adam and cross-entropy.

Every epoch is judged on the real CK+ sequences of the held-out folds (subjects never
trained on), against the frame classifier alone on the same frames: the mean of its frame
probabilities (what the video job falls back to) and its answer on the last frame.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from training import report
from training.data.samples import CLASSES
from training.data.sequences import SequenceSet
from training.nets.sequence import FrameToSequence
from training.train.loop import Context, Method, RunOptions, fit, saved_config

log = logging.getLogger(__name__)


@dataclass
class SequenceConfig:
    """Everything that defines a sequence-model run (saved in every checkpoint)."""

    backbone: str = "model_store/compact.mar"  # the frame classifier whose features it reads
    hidden: int = 64
    dropout: float = 0.2
    epochs: int = 8
    passes: int = 4  # passes over the training sequences per epoch (then validate, save)
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    label_smoothing: float = 0.05
    seed: int = 0
    holdout_folds: list[int] = field(default_factory=lambda: [0])
    steps: int = 8  # frames of an interpolated or synthetic onset
    # >0: the model sees at most the last `window` frames of a sequence, in training and
    # evaluation (1: a frame head on the frozen features, the control for what the
    # sequence adds over adapting to the data)
    window: int = 0
    synthetic: int = 700  # synthetic onsets (100 per class)


def _frame_handler(path: str) -> Any:
    """The frame classifier's serving handler (a `.mar`'s own, or a checkpoint's)."""
    from training.evaluate import load_handler

    handler = load_handler(path)
    if handler.metadata.get("net", {}).get("module") != "compact":
        raise ValueError(f"{path} is not a compact frame classifier")
    return handler


def metadata(cfg: SequenceConfig, frame_meta: dict[str, Any]) -> dict[str, Any]:
    """What the sequence handler needs: classes, the frame classifier's input crop, the net."""
    kwargs = {
        "backbone": dict(frame_meta["net"]["kwargs"]),
        "hidden": cfg.hidden,
        "num_classes": len(CLASSES),
        "dropout": cfg.dropout,
    }
    return {
        "kind": "sequence",
        "classes": list(CLASSES),
        "input": dict(frame_meta["input"]),
        "net": {
            "module": "sequence",
            "file": "sequence.py",
            "files": ["compact.py"],
            "kwargs": kwargs,
        },
        "backbone": {"name": frame_meta.get("name"), "version": frame_meta.get("version")},
    }


def frame_baselines(handler: Any, data: SequenceSet) -> dict[str, np.ndarray]:
    """The frame classifier alone on every sequence: the mean of its frame probabilities,
    and its probabilities on the last frame (`[N, classes]` each)."""
    probs = handler.predict_arrays(data.pool())
    mean = np.stack([probs[s].mean(0) for s in data.sequences])
    last = np.stack([probs[s[-1]] for s in data.sequences])
    return {"frame_mean": mean, "frame_last": last}


class SequenceMethod(Method):
    """GRU + head over frozen frame features (see the module docstring)."""

    name = "sequence"

    def __init__(
        self, cfg: SequenceConfig, train: SequenceSet, val: SequenceSet, ctx: Context
    ) -> None:
        super().__init__(ctx)
        self.cfg, self.val = cfg, val
        handler = _frame_handler(cfg.backbone)
        self.meta = metadata(cfg, handler.metadata)
        device = ctx.device
        self.model = FrameToSequence(**self.meta["net"]["kwargs"]).to(device)
        self.model.backbone.load_state_dict(handler.model.state_dict())
        for p in self.model.backbone.parameters():
            p.requires_grad_(False)
        spec = handler.metadata["input"]
        self.mean, self.std = float(spec["mean"]), float(spec["std"])
        self.train_feats = self._features(train.pool())
        self.val_feats = self._features(val.pool())
        self.train, self.lengths = train, torch.from_numpy(train.lengths()).to(device)
        self.labels = torch.tensor(train.labels, device=device)
        self.max_len = int(train.lengths().max())
        self.index = torch.full((len(train), self.max_len), -1, dtype=torch.long, device=device)
        for i, seq in enumerate(train.sequences):
            self.index[i, : len(seq)] = torch.from_numpy(seq)
        self.val_labels = np.array(val.labels)
        self.baselines = {
            k: report.summary(self.val_labels, v, list(CLASSES))
            for k, v in frame_baselines(handler, val).items()
        }
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.parameters = sum(p.numel() for p in trainable)
        self.opt = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.epochs = cfg.epochs
        self.per_pass = max(1, len(train) // cfg.batch_size)
        self.steps_per_epoch = self.per_pass * cfg.passes
        self.order = torch.arange(len(train), device=device)

    def _features(self, pool: np.ndarray) -> torch.Tensor:
        """The frozen backbone's features of every frame, `[M, D]`, on the device."""
        out = []
        self.model.eval()
        with torch.inference_mode():
            for i in range(0, len(pool), 512):
                x = torch.from_numpy(pool[i : i + 512]).to(self.ctx.device).float().div_(255)
                x = ((x - self.mean) / self.std).unsqueeze(1)
                out.append(self.model.frame_features(x))
        width = self.model.feature_size
        return torch.cat(out) if out else torch.zeros((0, width), device=self.ctx.device)

    def config(self) -> dict[str, Any]:
        return asdict(self.cfg)

    def networks(self) -> list[nn.Module]:
        return [self.model]

    def stateful(self) -> dict[str, Any]:
        return {"model": self.model, "optimizer": self.opt}

    def extra_state(self) -> dict[str, Any]:
        return {"metadata": self.meta, "parameters": self.parameters}

    def begin_epoch(self, epoch: int) -> None:
        n, gen, device = len(self.train), self.ctx.gen, self.ctx.device
        passes = [torch.randperm(n, generator=gen, device=device) for _ in range(self.cfg.passes)]
        self.order = torch.cat([p[: self.per_pass * self.cfg.batch_size] for p in passes])

    def step(self, step: int, index: int) -> dict[str, torch.Tensor]:
        cfg, gen, device = self.cfg, self.ctx.gen, self.ctx.device
        idx = self.order[index * cfg.batch_size : (index + 1) * cfg.batch_size]
        lengths = self.lengths[idx]
        # a random window ending at each sequence's last frame: 1 frame to all of it
        keep = 1 + (torch.rand(len(idx), generator=gen, device=device) * lengths).long()
        keep = torch.minimum(keep, lengths)
        if cfg.window:
            keep = keep.clamp(max=cfg.window)
        offsets = torch.arange(self.max_len, device=device)
        start = (lengths - keep).unsqueeze(1)
        positions = torch.clamp(start + offsets, max=self.max_len - 1)
        rows = torch.gather(self.index[idx], 1, positions)
        valid = offsets.unsqueeze(0) < keep.unsqueeze(1)
        feats = self.train_feats[rows.clamp(min=0)] * valid.unsqueeze(2)
        self.model.backbone.eval()  # frozen: its batch norm keeps its statistics
        logits = self.model.classify_features(feats, keep)
        y = self.labels[idx]
        loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return {
            "train_loss": loss.detach(),
            "train_acc": (logits.detach().argmax(1) == y).float().mean(),
        }

    def predict(self, data: SequenceSet, feats: torch.Tensor) -> np.ndarray:
        """The model's probabilities on every sequence of `data`, `[N, classes]`."""
        out = []
        with torch.inference_mode():
            for seq in data.sequences:
                seq = seq[-self.cfg.window :] if self.cfg.window else seq
                f = feats[torch.from_numpy(seq).to(self.ctx.device)].unsqueeze(0)
                length = torch.tensor([len(seq)], device=self.ctx.device)
                out.append(torch.softmax(self.model.classify_features(f, length), 1)[0].cpu())
        return torch.stack(out).numpy()

    def end_epoch(self, epoch: int) -> dict[str, Any]:
        summary = report.summary(
            self.val_labels, self.predict(self.val, self.val_feats), list(CLASSES)
        )
        summary["frame_mean_accuracy"] = self.baselines["frame_mean"]["accuracy"]
        summary["frame_last_accuracy"] = self.baselines["frame_last"]["accuracy"]
        return summary

    def reports(self, out: Path, step: int, history: list[dict[str, Any]]) -> None:
        if any("val_acc" in r for r in history):
            report.plot_curves(history, out / "curves.png")

    def improved(self, out: Path, summary: dict[str, Any], epoch: int) -> None:
        title = (
            f"sequence epoch {epoch}: {summary['accuracy']:.4f} "
            f"(frame mean {summary['frame_mean_accuracy']:.4f})"
        )
        report.plot_confusion(summary, out / "confusion.png", title)


def train_sequence(
    cfg: SequenceConfig,
    train: SequenceSet,
    val: SequenceSet,
    out: Path,
    resume: bool = False,
    opts: RunOptions | None = None,
) -> dict[str, Any]:
    """Train, checkpoint, select on `val` (held-out CK+ sequences); returns the best
    summary with the frame classifier's figures on the same sequences."""
    opts = opts or RunOptions()
    saved = saved_config(out, resume)
    if saved is not None:
        cfg = replace(SequenceConfig(**saved), epochs=cfg.epochs)
    out.mkdir(parents=True, exist_ok=True)
    method = SequenceMethod(cfg, train, val, Context(opts, cfg.seed))
    result = fit(method, opts, out, resume=saved is not None)
    best = dict(result["best"])
    best.update({k: result[k] for k in ("stopped", "step", "total_steps")})
    best["frame_mean"] = method.baselines["frame_mean"]
    best["frame_last"] = method.baselines["frame_last"]
    return best


def sequence_sets(ckplus_path: str, cfg: SequenceConfig) -> tuple[SequenceSet, SequenceSet]:
    """(train, validation): every CK+ sequence, onset and neutral sequence of the folds not
    held out plus the synthetic onsets; the real CK+ sequences of the held-out folds."""
    from training.data.ckplus import load_ckplus
    from training.data.sequences import ckplus_sequences, merge, synthetic_sequences

    real = ckplus_sequences(load_ckplus(ckplus_path), cfg.steps, cfg.seed)
    folds, sources = np.array(real.folds), np.array(real.sources)
    held = np.isin(folds, cfg.holdout_folds)
    train = merge(real.select(~held), synthetic_sequences(cfg.synthetic, cfg.steps, cfg.seed))
    return train, real.select(held & (sources == "ckplus"))
