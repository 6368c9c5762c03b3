"""Classifiers on 48x48 grayscale faces (compact CNN, DeRL stage 2, ensemble members),
as a method of the shared training loop (`training/train/loop.py`).

The whole data set sits on the training device as uint8; batches are augmented there.
SGD with Nesterov momentum, warm-up then a cosine schedule per step, label smoothing,
optional class balancing and distillation from a teacher. Validation runs through the
serving handler itself, so the selected model is judged exactly as it will be served; the
loop keeps `last.pt`/`best.pt`, and this method draws the curves and, on every new best,
the confusion matrix.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from service.handlers.classifier import ClassifierHandler
from training import report
from training.data.augment import AugmentConfig, augment
from training.data.samples import CLASSES, FaceSet
from training.data.tensors import to_device
from training.nets import build_net
from training.train import checkpoint, widen
from training.train.derl_gan import generator_weights
from training.train.loop import Context, Method, RunOptions, fit, saved_config

log = logging.getLogger(__name__)


@dataclass
class ClassifierConfig:
    """Everything that defines a classifier training run (saved in every checkpoint)."""

    net: str = "compact"  # module in training.nets
    net_kwargs: dict[str, Any] = field(default_factory=dict)
    epochs: int = 60
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: int = 2
    label_smoothing: float = 0.1
    balance: Literal["none", "loss", "sampler"] = "none"
    seed: int = 0
    mean: float = 0.5
    std: float = 0.25
    tta_flip: bool = True
    framing: str = "fer2013"  # which crop framing the training images have
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    limit_batches: int = 0  # >0: stop each epoch after that many batches (smoke runs)
    generator: str = ""  # DeRL: stage-1 checkpoint whose generator is loaded and frozen
    # DeRL: lambda_1..4 of the local CNN losses (lambda_5 = 1); ensemble: each member's loss
    local_weight: float = 0.5
    init: str = ""  # start from this checkpoint's or .mar's weights (fine-tuning, new schedule)
    # Knowledge distillation (Hinton et al. 2015) from a trained teacher (.mar or checkpoint):
    # every head's loss is (1 - w) * CE(labels) + w * T^2 * KL(teacher_T || student_T). The
    # teacher's probabilities are computed once, on the clean training images, through its
    # serving handler (its own preprocessing and flip averaging).
    distill: str = ""
    distill_weight: float = 0.5
    distill_temperature: float = 4.0
    # mixup (Zhang et al. 2018): each batch is blended with a shuffled copy of itself by a
    # weight drawn from Beta(mixup, mixup), and so are the losses of both label sets.
    mixup: float = 0.0


def metadata(cfg: ClassifierConfig, input_size: int) -> dict[str, Any]:
    """What a handler needs to run the model: classes, input spec, network, framing."""
    return {
        "kind": "derl" if cfg.net == "derl" else "classifier",
        "classes": list(CLASSES),
        "input": {
            "size": input_size,
            "channels": 1,
            "color": "gray",
            "mean": cfg.mean,
            "std": cfg.std,
            "framing": cfg.framing,
        },
        "net": {"module": cfg.net, "file": f"{cfg.net}.py", "kwargs": cfg.net_kwargs},
        "tta_flip": cfg.tta_flip,
    }


def _config_from_dict(d: dict[str, Any]) -> ClassifierConfig:
    d = dict(d)
    d["augment"] = AugmentConfig(**d.get("augment", {}))
    return ClassifierConfig(**d)


def _plain(cfg: ClassifierConfig) -> dict[str, Any]:
    """The config as checkpoint-safe plain data (lists, not tuples)."""
    d = asdict(cfg)
    d["net_kwargs"] = {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.net_kwargs.items()}
    return d


def _schedule(cfg: ClassifierConfig, steps_per_epoch: int) -> Any:
    total = max(1, cfg.epochs * steps_per_epoch)
    warm = cfg.warmup_epochs * steps_per_epoch

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

    return factor


def _forward(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Final logits and auxiliary logits (DeRL's 4 local CNNs; none for plain CNNs)."""
    if hasattr(model, "forward_all"):
        final, local_logits, _ = model.forward_all(x)  # type: ignore[operator]
        return final, list(local_logits)
    return model(x), []


def teacher_targets(path: str, images: np.ndarray, temperature: float) -> torch.Tensor:
    """The teacher's probabilities on `images`, softened by `temperature`."""
    from training.evaluate import load_handler

    probs = load_handler(path).predict_arrays(images)
    logp = torch.from_numpy(np.log(np.clip(probs, 1e-8, 1.0))).float()
    return torch.softmax(logp / temperature, dim=1)


def head_loss(
    logits: torch.Tensor,
    y: torch.Tensor,
    cfg: ClassifierConfig,
    weight: torch.Tensor | None,
    soft: torch.Tensor | None,
) -> torch.Tensor:
    """Cross-entropy on the labels, mixed with distillation when a teacher is set."""
    ce = F.cross_entropy(logits, y, weight=weight, label_smoothing=cfg.label_smoothing)
    if soft is None:
        return ce
    t = cfg.distill_temperature
    kd = F.kl_div(F.log_softmax(logits / t, dim=1), soft, reduction="batchmean") * t * t
    return (1 - cfg.distill_weight) * ce + cfg.distill_weight * kd


def beta_sample(alpha: float, gen: torch.Generator, tries: int = 32) -> torch.Tensor:
    """One draw from Beta(alpha, alpha), on the generator's device and from its stream (torch's
    Beta takes no generator): Johnk's method, `tries` candidates at once, the first
    accepted kept (acceptance is at least 1/2 for alpha <= 1), so the host never waits."""
    u = torch.rand(2, tries, generator=gen, device=gen.device)
    x, y = u[0].pow(1 / alpha), u[1].pow(1 / alpha)
    ok = (x + y <= 1) & (x + y > 0)
    first = torch.argmax(ok.to(torch.uint8))
    value = (x / (x + y).clamp_min(1e-12))[first]
    return torch.where(ok.any(), value, torch.full_like(value, 0.5))


def evaluate_handler(handler: ClassifierHandler, data: FaceSet) -> dict[str, Any]:
    """Accuracy figures of a loaded handler on a labelled set."""
    probs = handler.predict_arrays(data.images)
    return report.summary(data.labels, probs, handler.classes)


class ClassifierMethod(Method):
    """One classifier run: network, SGD, schedule, data on the device, validation."""

    def __init__(
        self,
        cfg: ClassifierConfig,
        train: FaceSet,
        val: FaceSet,
        ctx: Context,
        out: Path,
        resuming: bool = False,
    ) -> None:
        super().__init__(ctx)
        self.cfg, self.val, self.name = cfg, val, cfg.net
        self.meta = metadata(cfg, int(train.images.shape[1]))
        device = ctx.device
        model: Any = build_net(cfg.net, cfg.net_kwargs)
        if cfg.init and not resuming:
            init = checkpoint.load_weights(cfg.init)
            if cfg.net == "compact" and init[widen.CONV_A + ".weight"].shape[0] < model.widths[1]:
                # A narrower trained compact CNN: grow it, computing the same function.
                init = widen.widen_compact_block2(init, model.widths[1], seed=cfg.seed)
            model.load_state_dict(init)
        if hasattr(model, "freeze_generator"):  # DeRL stage 2: the stage-1 generator, frozen
            if not resuming:
                if cfg.generator:  # over an `init`'s generator, if both are given
                    model.generator.load_state_dict(generator_weights(cfg.generator))
                elif not cfg.init:
                    raise ValueError("DeRL needs the stage-1 checkpoint (generator=...)")
            model.freeze_generator()
        self.model: nn.Module = model.to(device, memory_format=torch.channels_last)
        self.parameters = sum(p.numel() for p in model.parameters())
        log.info("%s: %d parameters", cfg.net, self.parameters)
        ctx.compile(self.model)

        trainable = [p for p in model.parameters() if p.requires_grad]
        groups: list[dict[str, Any]] = [
            {"params": [p for p in trainable if p.ndim > 1], "weight_decay": cfg.weight_decay},
            {"params": [p for p in trainable if p.ndim <= 1]},
        ]
        self.opt = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
        self.n = len(train)
        steps = max(1, self.n // cfg.batch_size)  # a set smaller than one batch is one batch
        self.steps_per_epoch = min(steps, cfg.limit_batches) if cfg.limit_batches else steps
        self.epochs = cfg.epochs
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, _schedule(cfg, self.steps_per_epoch)
        )

        counts = np.maximum(train.class_counts(len(CLASSES)), 1)
        weights = torch.tensor(counts.sum() / (len(CLASSES) * counts), dtype=torch.float32)
        self.loss_weight = weights.to(device) if cfg.balance == "loss" else None
        self.sample_p = (weights[train.labels] / weights[train.labels].sum()).double().to(device)
        self.images = to_device(train.images, device)
        self.labels = torch.from_numpy(train.labels).to(device)
        self.soft_all = self._teacher(train, out)
        self.order = torch.arange(self.n, device=device)
        self.handler = ClassifierHandler()
        self.handler.device = device

    def _teacher(self, train: FaceSet, out: Path) -> torch.Tensor | None:
        """The teacher's softened answers on the training images (cached in the run: a
        resumed run reuses them when teacher, temperature and images are the same)."""
        cfg = self.cfg
        if not cfg.distill:
            return None
        cache = out / "teacher_probs.pt"
        key = {
            "teacher": str(Path(cfg.distill).resolve()),
            "temperature": cfg.distill_temperature,
            "images": hashlib.sha256(train.images.tobytes()).hexdigest(),
        }
        saved = torch.load(cache, weights_only=True) if cache.exists() else {}
        if saved.get("key") == key:
            soft = saved["probs"]
        else:
            soft = teacher_targets(cfg.distill, train.images, cfg.distill_temperature)
            torch.save({"key": key, "probs": soft}, cache)
        agree = float((soft.argmax(1) == torch.from_numpy(train.labels)).float().mean())
        log.info("teacher %s: %.4f of the training labels", cfg.distill, agree)
        return soft.to(self.ctx.device)

    def config(self) -> dict[str, Any]:
        return _plain(self.cfg)

    def networks(self) -> list[nn.Module]:
        return [self.model]

    def stateful(self) -> dict[str, Any]:
        return {"model": self.model, "optimizer": self.opt, "scheduler": self.sched}

    def extra_state(self) -> dict[str, Any]:
        return {"metadata": self.meta, "parameters": self.parameters}

    def load(self, state: dict[str, Any]) -> None:
        super().load(state)
        self.meta = state["metadata"]

    def begin_epoch(self, epoch: int) -> None:
        gen = self.ctx.gen
        if self.cfg.balance == "sampler":
            self.order = torch.multinomial(self.sample_p, self.n, replacement=True, generator=gen)
        else:
            self.order = torch.randperm(self.n, generator=gen, device=self.ctx.device)

    def step(self, step: int, index: int) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        idx = self.order[index * cfg.batch_size : (index + 1) * cfg.batch_size]
        x = augment(self.images[idx].float().div_(255), cfg.augment, self.ctx.gen)
        x = ((x - cfg.mean) / cfg.std).contiguous(memory_format=torch.channels_last)
        y = self.labels[idx]
        soft = None if self.soft_all is None else self.soft_all[idx]
        mixed: tuple[torch.Tensor, torch.Tensor] | None = None
        if cfg.mixup > 0:
            lam = beta_sample(cfg.mixup, self.ctx.gen)
            perm = torch.randperm(len(idx), generator=self.ctx.gen, device=self.ctx.device)
            x = lam * x + (1 - lam) * x[perm]
            mixed = (lam, perm)
        with self.ctx.autocast():
            logits, aux = _forward(self.model, x)

        def loss_of(z: torch.Tensor) -> torch.Tensor:
            loss = head_loss(z.float(), y, cfg, self.loss_weight, soft)
            if mixed is None:
                return loss
            lam, perm = mixed
            other = None if soft is None else soft[perm]
            return lam * loss + (1 - lam) * head_loss(
                z.float(), y[perm], cfg, self.loss_weight, other
            )

        loss = loss_of(logits)
        for extra in aux:  # DeRL's local CNN losses, the ensemble's members (deep supervision)
            loss = loss + cfg.local_weight * loss_of(extra)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.sched.step()
        return {
            "train_loss": loss.detach(),
            "train_acc": (logits.detach().argmax(1) == y).float().mean(),
        }

    def end_epoch(self, epoch: int) -> dict[str, Any]:
        net = build_net(self.cfg.net, self.cfg.net_kwargs)
        self.handler.setup(net, self.model.state_dict(), self.meta)
        return evaluate_handler(self.handler, self.val)

    def row_extras(self) -> dict[str, float]:
        return {"lr": float(self.opt.param_groups[0]["lr"])}

    def reports(self, out: Path, step: int, history: list[dict[str, Any]]) -> None:
        if any("val_acc" in r for r in history):
            report.plot_curves(history, out / "curves.png")

    def improved(self, out: Path, summary: dict[str, Any], epoch: int) -> None:
        title = f"{self.cfg.net} epoch {epoch}: {summary['accuracy']:.4f}"
        report.plot_confusion(summary, out / "confusion.png", title)


def train_classifier(
    cfg: ClassifierConfig,
    train: FaceSet,
    val: FaceSet,
    out: Path,
    resume: bool = False,
    opts: RunOptions | None = None,
) -> dict[str, Any]:
    """Train, checkpoint, select on `val`; returns the best validation summary (with the
    loop's `stopped`, `step` and `total_steps`).

    `resume` continues from `out/last.pt` with its saved configuration, except `cfg.epochs`,
    which may extend (or shorten) the run.
    """
    opts = opts or RunOptions()
    saved = saved_config(out, resume)
    if saved is not None:
        cfg = replace(_config_from_dict(saved), epochs=cfg.epochs)
    else:
        size = int(train.images.shape[1])
        cfg.net_kwargs = {"input_size": size, "num_classes": len(CLASSES), **cfg.net_kwargs}
    out.mkdir(parents=True, exist_ok=True)
    resuming = saved is not None
    method = ClassifierMethod(cfg, train, val, Context(opts, cfg.seed), out, resuming)
    result = fit(method, opts, out, resume=resuming)
    return {
        **result["best"],
        "stopped": result["stopped"],
        "step": result["step"],
        "total_steps": result["total_steps"],
    }
