"""The CK+ protocol for DeRL: 7 classes, subject-independent 10-fold cross-validation.

For every fold k: stage 1 (the de-expression GAN) trains on the CK+ pairs of the other
folds' subjects, stage 2 (local CNNs + final classifier) on the other folds' images of the
7-class protocol (`ckplus.tdgan_protocol`); fold k is scored with the last epoch's model
(no model selection on the test fold). Reports mean and per-fold accuracy and the summed
confusion matrix.

As the paper does it, the folds can start from a DeRL pre-trained on other data
(`pretrained`: a stage-2 checkpoint that never saw CK+, e.g. FER2013 on a generator
pre-trained by reconstruction of FER2013): each fold's generator then starts from the
pre-trained one (and, with `gan_epochs` 0, stays it), and stage 2 fine-tunes all of the
pre-trained network but the frozen generator on the fold's training images.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from training import report
from training.data import ckplus
from training.data.samples import CLASSES, FaceSet
from training.evaluate import load_handler
from training.nets.derl import DEFAULT_WIDTHS
from training.train import checkpoint
from training.train.classifier import ClassifierConfig, train_classifier
from training.train.derl_gan import GanConfig, train_gan
from training.train.loop import RunOptions

log = logging.getLogger(__name__)


@dataclass
class CvConfig:
    folds: tuple[int, ...] = tuple(range(10))
    gan_epochs: int = 60
    epochs: int = 40
    batch_size: int = 32
    lr: float = 0.01
    seed: int = 0
    pretrained: str = ""  # a DeRL stage-2 checkpoint (or .mar) trained without CK+


def run_cv(
    cfg: CvConfig, data: FaceSet, out: Path, opts: RunOptions | None = None
) -> dict[str, Any]:
    """Run (or resume) every fold; writes `cv.json` and `confusion.png` under `out`.

    With a time budget, the whole run shares it: when a fold's training stops for it, the
    run returns `{"stopped": "time_budget"}` and a later call resumes where it stopped."""
    opts = opts or RunOptions()
    start = time.monotonic() if opts.started is None else opts.started
    deadline = start + opts.time_budget if opts.time_budget > 0 else 0.0

    def options() -> RunOptions:
        if not deadline:
            return opts
        left = max(0.001, deadline - time.monotonic())
        return replace(opts, time_budget=left, started=None)

    progress = opts.progress
    seven = ckplus.without_contempt(data)
    protocol = ckplus.tdgan_protocol(data)
    results: list[dict[str, Any]] = []
    total = np.zeros((len(CLASSES), len(CLASSES)), dtype=np.int64)
    if not cfg.pretrained and cfg.gan_epochs <= 0:
        raise ValueError("without a pre-trained DeRL every fold needs gan_epochs > 0")
    net_kwargs = checkpoint.net_kwargs(cfg.pretrained) if cfg.pretrained else {}
    for k in cfg.folds:
        fold_dir = out / f"fold{k}"
        generator = ""  # with gan_epochs 0: the pre-trained network's own
        if cfg.gan_epochs > 0:
            gan_train = seven.subset(seven.meta["fold"] != k)
            gan_cfg = GanConfig(
                epochs=cfg.gan_epochs,
                seed=cfg.seed,
                holdout_folds=(k,),
                cross_sequence=False,
                init=cfg.pretrained,
                widths=tuple(net_kwargs.get("widths", DEFAULT_WIDTHS)),
                code=int(net_kwargs.get("code", GanConfig.code)),
            )
            gan = train_gan(
                gan_cfg, gan_train, ckplus.pairs(gan_train), fold_dir / "gan", True, options()
            )
            if gan["stopped"] == "time_budget":
                return {"stopped": "time_budget", "folds": results}
            generator = str(fold_dir / "gan" / checkpoint.LAST)
        train_idx, test_idx = ckplus.folds(protocol, k)
        train_set, test_set = protocol.subset(train_idx), protocol.subset(test_idx)
        cls_cfg = ClassifierConfig(
            net="derl",
            net_kwargs=net_kwargs,
            epochs=cfg.epochs,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            seed=cfg.seed,
            mean=0.5,
            std=0.5,
            framing="ckplus",
            warmup_epochs=1,
            generator=generator,
            init=cfg.pretrained,
        )
        stage2 = train_classifier(cls_cfg, train_set, test_set, fold_dir / "derl", True, options())
        if stage2["stopped"] == "time_budget":
            return {"stopped": "time_budget", "folds": results}
        handler = load_handler(fold_dir / "derl" / checkpoint.LAST)  # last epoch, not best
        s = report.summary(
            test_set.labels, handler.predict_arrays(test_set.images), handler.classes
        )
        total += np.asarray(s["confusion"])
        results.append({"fold": k, "n": s["n"], "accuracy": s["accuracy"]})
        log.info("fold %d: accuracy %.4f (n=%d)", k, s["accuracy"], s["n"])
        if progress:
            print(f"fold {k}: accuracy {s['accuracy']:.4f} (n={s['n']})", flush=True)
    accs = [r["accuracy"] for r in results]
    n = sum(r["n"] for r in results)
    pooled = float(np.trace(total) / max(n, 1))
    summary = {
        "stopped": "done",
        "protocol": "CK+ 7 classes (6 basic + neutral), 3 peak frames per labelled sequence + "
        "neutral first frames, subject-independent 10-fold CV",
        "folds": results,
        "mean_accuracy": float(np.mean(accs)) if accs else 0.0,
        "std_accuracy": float(np.std(accs)) if accs else 0.0,
        "pooled_accuracy": pooled,
        "confusion": total.tolist(),
        "classes": list(CLASSES),
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(cfg).items()},
    }
    if cfg.pretrained and Path(cfg.pretrained).suffix != ".mar":
        # What the pre-trained network was (its run's configuration: generator, data form).
        summary["pretrained_config"] = checkpoint.load(cfg.pretrained)["config"]
    out.mkdir(parents=True, exist_ok=True)
    (out / "cv.json").write_text(json.dumps(summary, indent=1))
    recall = np.divide(
        np.diag(total), total.sum(1), out=np.zeros(len(CLASSES)), where=total.sum(1) > 0
    )
    report.plot_confusion(
        {
            "confusion": total.tolist(),
            "classes": list(CLASSES),
            "accuracy": pooled,
            "per_class": dict(zip(CLASSES, recall.tolist(), strict=True)),
        },
        out / "confusion.png",
        f"DeRL CK+ 10-fold: mean {summary['mean_accuracy']:.4f}",
    )
    return summary
