"""Training speed of every trainer on the current device: milliseconds per step, steps per
second, and for the classifiers seconds per FER2013 epoch (28,709 images).

Each trainer is the project's own method of the shared training loop, built as `fer-train`
builds it, on random 48x48 faces (speed does not depend on the pixels): the compact CNN as
shipped (1.1), DeRL stage 2 as shipped (1.0), DeRL stage 1, the identity embedding, and
TDGAN at the default and at the paper's widths. After warm-up steps (compilation, cuDNN
autotuning) `--steps` steps are timed between two device synchronisations. Figures go to
`bench/results/train_speed_<device>.json` with the machine and the settings. Needs only
torch, numpy, Pillow and tqdm (it runs on a bare GPU machine).

    python -m bench.train_speed [--device auto|cpu|cuda] [--precision auto|fp32|bf16]
        [--compile none|default|reduce-overhead|max-autotune] [--steps 20] [--only tdgan]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.common import save
from training.data.samples import CLASSES, FaceSet
from training.nets.derl import Generator
from training.nets.tdgan import PAPER_WIDTHS
from training.train import checkpoint
from training.train.classifier import ClassifierConfig, ClassifierMethod
from training.train.derl_gan import GanConfig, GanMethod
from training.train.identity import IdentityConfig, IdentityMethod
from training.train.loop import COMPILE_MODES, Context, Method, RunOptions
from training.train.tdgan import TdganConfig, TdganMethod

FER2013_TRAIN = 28709
SIZE = 48


def faces(n: int, subjects: int = 0, seed: int = 0) -> FaceSet:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, SIZE, SIZE), dtype=np.uint8)
    labels = rng.integers(0, len(CLASSES), n)
    meta = {"subject": np.array([f"s{i % subjects:03d}" for i in range(n)])} if subjects else {}
    return FaceSet(images, labels, meta)


def classifier(ctx: Context, tmp: Path, **kwargs: Any) -> Method:
    net = kwargs.pop("net", "compact")
    cfg = ClassifierConfig(net=net, batch_size=128, **kwargs)
    cfg.net_kwargs = {"input_size": SIZE, "num_classes": len(CLASSES), **cfg.net_kwargs}
    return ClassifierMethod(cfg, faces(4096), faces(256, seed=1), ctx, tmp)


def derl_stage2(ctx: Context, tmp: Path) -> Method:
    generator = tmp / "stage1.pt"
    checkpoint.save({"model": Generator(SIZE).state_dict()}, generator)
    net_kwargs = {"local_width": 64, "local_convs": 2, "local_growth": 2}
    return classifier(
        ctx, tmp, net="derl", net_kwargs=net_kwargs, mean=0.5, std=0.5, generator=str(generator)
    )


def derl_stage1(ctx: Context, tmp: Path) -> Method:
    data = faces(2048)
    pairs = np.stack([np.arange(1024), np.arange(1024, 2048)], 1)
    return GanMethod(GanConfig(), data, pairs, ctx)


def identity(ctx: Context, tmp: Path) -> Method:
    return IdentityMethod(IdentityConfig(), faces(2048, subjects=110), ctx)


def tdgan(ctx: Context, tmp: Path, paper: bool = False) -> Method:
    kwargs: dict[str, Any] = {"input_size": SIZE, "num_classes": len(CLASSES)}
    if paper:
        kwargs.update(PAPER_WIDTHS)
    cfg = TdganConfig(net_kwargs=kwargs)
    return TdganMethod(cfg, faces(1024, subjects=110), faces(4096, seed=1), ctx)


TRAINERS: dict[str, Callable[[Context, Path], Method]] = {
    "compact": lambda ctx, tmp: classifier(ctx, tmp, net_kwargs={"widths": (32, 128)}),
    "derl": derl_stage2,
    "derl-gan": derl_stage1,
    "identity": identity,
    "tdgan": tdgan,
    "tdgan-paper": lambda ctx, tmp: tdgan(ctx, tmp, paper=True),
}
BATCH = {"compact": 128, "derl": 128, "derl-gan": 32, "identity": 64}


def measure(method: Method, warmup: int, steps: int) -> float:
    """Seconds per step over `steps` steps after `warmup` steps."""
    device = method.ctx.device

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for net in method.networks():
        net.train()
    t0 = 0.0
    for i in range(warmup + steps):
        index = i % method.steps_per_epoch
        if index == 0:
            method.begin_epoch(i // method.steps_per_epoch)
        if i == warmup:
            sync()
            t0 = time.perf_counter()
        method.step(i, index)
    sync()
    return (time.perf_counter() - t0) / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--compile", default="none", choices=COMPILE_MODES)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--only", nargs="*", choices=sorted(TRAINERS), default=sorted(TRAINERS))
    p.add_argument("--name", default="", help="results file name (default train_speed_<device>)")
    args = p.parse_args()
    opts = RunOptions(
        device=args.device, precision=args.precision, threads=args.threads, compile=args.compile
    )
    rows: dict[str, dict[str, Any]] = {}
    device = ""
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only:
            ctx = Context(opts, seed=0)
            device = ctx.device.type
            method = TRAINERS[name](ctx, Path(tmp))
            seconds = measure(method, args.warmup, args.steps)
            batch = BATCH.get(name, 32)
            row: dict[str, Any] = {
                "batch": batch,
                "ms_per_step": round(seconds * 1000, 2),
                "steps_per_second": round(1 / seconds, 2),
                "images_per_second": round(batch / seconds, 1),
            }
            if name in ("compact", "derl"):
                row["seconds_per_fer2013_epoch"] = round(seconds * (FER2013_TRAIN // batch), 1)
            rows[name] = row
            print(f"{name:12s} " + "  ".join(f"{k} {v}" for k, v in row.items()), flush=True)
            del method
            if ctx.device.type == "cuda":
                torch.cuda.empty_cache()
    settings = {
        "device": device,
        "precision": args.precision,
        "autocast": str(Context(opts, seed=0).amp),
        "compile": args.compile,
        "steps": args.steps,
        "warmup": args.warmup,
    }
    path = save(args.name or f"train_speed_{device}", {"settings": settings, "trainers": rows})
    print(path)


if __name__ == "__main__":
    main()
