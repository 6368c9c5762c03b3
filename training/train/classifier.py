"""Trainer for image classifiers on 48x48 grayscale faces (compact CNN; ensemble members).

The whole data set sits in memory as uint8; batches are augmented on the fly as tensors.
Every epoch writes `last.pt` (resumable: model, optimiser, schedule, RNG, history) and,
when validation accuracy improves, `best.pt`; curves and a confusion matrix are written as
PNG beside them. Validation runs through the serving handler itself, so the selected
model is judged exactly as it will be served.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from service.handlers.classifier import ClassifierHandler
from training import report
from training.data.augment import AugmentConfig, augment
from training.data.samples import CLASSES, FaceSet
from training.train import checkpoint, precision, widen

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
    bf16: bool = True  # bfloat16 autocast, only on CPUs with native bf16 (else 10x slower)
    threads: int = 0  # torch threads (0: torch's default)
    mean: float = 0.5
    std: float = 0.25
    tta_flip: bool = True
    framing: str = "fer2013"  # which crop framing the training images have
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    limit_batches: int = 0  # >0: stop each epoch after that many batches (smoke runs)
    generator: str = ""  # DeRL: stage-1 checkpoint whose generator is loaded and frozen
    local_weight: float = 0.5  # DeRL: lambda_1..4 of the local CNN losses (lambda_5 = 1)
    init: str = ""  # start from this checkpoint's or .mar's weights (fine-tuning, new schedule)
    # Knowledge distillation (Hinton et al. 2015) from a trained teacher (.mar or checkpoint):
    # every head's loss is (1 - w) * CE(labels) + w * T^2 * KL(teacher_T || student_T). The
    # teacher's probabilities are computed once, on the clean training images, through its
    # serving handler (its own preprocessing and flip averaging).
    distill: str = ""
    distill_weight: float = 0.5
    distill_temperature: float = 4.0


def build_net(name: str, kwargs: dict[str, Any]) -> torch.nn.Module:
    """Instantiate `training.nets.<name>.build(**kwargs)`."""
    module = importlib.import_module(f"training.nets.{name}")
    net: torch.nn.Module = module.build(**kwargs)
    return net


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


def evaluate_handler(handler: ClassifierHandler, data: FaceSet) -> dict[str, Any]:
    """Accuracy figures of a loaded handler on a labelled set."""
    probs = handler.predict_arrays(data.images)
    return report.summary(data.labels, probs, handler.classes)


def train_classifier(
    cfg: ClassifierConfig,
    train: FaceSet,
    val: FaceSet,
    out: Path,
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train, checkpoint every epoch, select on `val`; returns the best validation summary.

    `resume` continues from `out/last.pt` with its saved configuration, except `cfg.epochs`,
    which may extend (or shorten) the run.
    """
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    size = int(train.images.shape[1])
    cfg.net_kwargs = {"input_size": size, "num_classes": len(CLASSES), **cfg.net_kwargs}
    meta = metadata(cfg, size)

    state: dict[str, Any] | None = None
    if resume and (out / checkpoint.LAST).exists():
        state = checkpoint.load(out / checkpoint.LAST)
        # The run's definition comes from the checkpoint; how long and on how many threads
        # it runs are the caller's.
        epochs, threads = cfg.epochs, cfg.threads
        cfg = _config_from_dict(state["config"])
        cfg.epochs, cfg.threads = epochs, threads
        meta = state["metadata"]
        log.info("resuming %s from epoch %d", out, state["epoch"])

    torch.manual_seed(cfg.seed)
    model: Any = build_net(cfg.net, cfg.net_kwargs)
    if hasattr(model, "freeze_generator"):  # DeRL stage 2: the stage-1 generator, frozen
        if state is None:
            if not cfg.generator:
                raise ValueError("DeRL needs the stage-1 checkpoint (generator=...)")
            model.generator.load_state_dict(checkpoint.load(cfg.generator)["model"])
        model.freeze_generator()
    if cfg.init and state is None:
        init = checkpoint.load_weights(cfg.init)
        if cfg.net == "compact" and init[widen.CONV_A + ".weight"].shape[0] < model.widths[1]:
            # A narrower trained compact CNN: grow it, computing the same function.
            init = widen.widen_compact_block2(init, model.widths[1], seed=cfg.seed)
        model.load_state_dict(init)
    use_bf16 = precision.use_bf16(cfg.bf16)
    model = model.to(memory_format=torch.channels_last)
    params = sum(p.numel() for p in model.parameters())
    log.info("%s: %d parameters", cfg.net, params)

    trainable: list[torch.Tensor] = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in trainable if p.ndim > 1]
    no_decay = [p for p in trainable if p.ndim <= 1]
    groups: list[dict[str, Any]] = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay},
    ]
    opt = torch.optim.SGD(
        groups,
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=True,
    )
    n = len(train)
    steps = max(1, n // cfg.batch_size)  # a set smaller than one batch is one batch
    if cfg.limit_batches:
        steps = min(steps, cfg.limit_batches)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(cfg, steps))
    gen = torch.Generator().manual_seed(cfg.seed)
    history: list[dict[str, float]] = []
    best: dict[str, Any] = {"accuracy": -1.0}
    start = 0
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        gen.set_state(state["rng"])
        if "torch_rng" in state:  # dropout draws from torch's global RNG (older: absent)
            torch.set_rng_state(state["torch_rng"])
        history = state["history"]
        best = state["best"]
        start = state["epoch"]

    counts = np.maximum(train.class_counts(len(CLASSES)), 1)
    weights = torch.tensor(counts.sum() / (len(CLASSES) * counts), dtype=torch.float32)
    loss_weight = weights if cfg.balance == "loss" else None
    sample_p = (weights[train.labels] / weights[train.labels].sum()).double()
    images = torch.from_numpy(train.images).unsqueeze(1)  # uint8 [N,1,S,S]
    labels = torch.from_numpy(train.labels)
    soft_all = None
    if cfg.distill:
        # A resumed run reuses the teacher's answers when they are for the same teacher,
        # temperature and training images.
        cache = out / "teacher_probs.pt"
        key = {
            "teacher": str(Path(cfg.distill).resolve()),
            "temperature": cfg.distill_temperature,
            "images": hashlib.sha256(train.images.tobytes()).hexdigest(),
        }
        saved = torch.load(cache, weights_only=True) if cache.exists() else {}
        if saved.get("key") == key:
            soft_all = saved["probs"]
        else:
            soft_all = teacher_targets(cfg.distill, train.images, cfg.distill_temperature)
            torch.save({"key": key, "probs": soft_all}, cache)
        agree = float((soft_all.argmax(1) == labels).float().mean())
        log.info("teacher %s: %.4f of the training labels", cfg.distill, agree)

    handler = ClassifierHandler()
    for epoch in range(start, cfg.epochs):
        model.train()
        if cfg.balance == "sampler":
            order = torch.multinomial(sample_p, n, replacement=True, generator=gen)
        else:
            order = torch.randperm(n, generator=gen)
        t0 = time.time()
        total_loss, correct, seen = 0.0, 0, 0
        bar = tqdm(
            range(steps), desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress, leave=False
        )
        for b in bar:
            idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            x = augment(images[idx].float().div_(255), cfg.augment, gen)
            x = ((x - cfg.mean) / cfg.std).contiguous(memory_format=torch.channels_last)
            y = labels[idx]
            soft = None if soft_all is None else soft_all[idx]
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
                logits, aux = _forward(model, x)
            loss = head_loss(logits.float(), y, cfg, loss_weight, soft)
            for extra in aux:  # DeRL's local CNN losses (deep supervision)
                loss = loss + cfg.local_weight * head_loss(extra.float(), y, cfg, loss_weight, soft)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total_loss += loss.item() * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
            bar.set_postfix(loss=f"{total_loss / seen:.3f}", acc=f"{correct / seen:.3f}")
        bar.close()

        handler.setup(build_net(cfg.net, cfg.net_kwargs), model.state_dict(), meta)
        val_summary = evaluate_handler(handler, val)
        row = {
            "epoch": epoch + 1,
            "train_loss": total_loss / max(seen, 1),
            "train_acc": correct / max(seen, 1),
            "val_acc": val_summary["accuracy"],
            "lr": opt.param_groups[0]["lr"],
            "seconds": time.time() - t0,
        }
        history.append(row)
        improved = val_summary["accuracy"] > best["accuracy"]
        if improved:
            best = {**val_summary, "epoch": epoch + 1}
        ckpt = {
            "epoch": epoch + 1,
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "rng": gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "config": asdict(cfg),
            "metadata": meta,
            "history": history,
            "best": best,
            "parameters": params,
        }
        if improved:
            checkpoint.save(ckpt, out / checkpoint.BEST)
            report.plot_confusion(
                val_summary,
                out / "confusion.png",
                f"{cfg.net} epoch {epoch + 1}: {val_summary['accuracy']:.4f}",
            )
        checkpoint.save(ckpt, out / checkpoint.LAST)
        report.plot_curves(history, out / "curves.png")
        (out / "history.json").write_text(json.dumps(history, indent=1))
        msg = (
            f"epoch {epoch + 1}/{cfg.epochs} loss {row['train_loss']:.4f} "
            f"train {row['train_acc']:.4f} val {row['val_acc']:.4f} "
            f"best {best['accuracy']:.4f}@{best['epoch']} ({row['seconds']:.0f}s)"
        )
        log.info(msg)
        if progress:
            print(msg, flush=True)
    return best
