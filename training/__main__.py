"""`fer-train`: train, evaluate and export the models of fer-service."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from training.data.samples import FaceSet


def load_dataset(path: str, split: str | None = None) -> FaceSet:
    """Read a data set by its form: `.npz`, FER2013 `.csv`, or an image-folder root."""
    from training.data import fer2013

    p = Path(path)
    if p.is_dir():
        from training.data import folder

        return folder.load_folder(p)
    if p.suffix == ".csv":
        return fer2013.load_csv(p, split)
    return fer2013.load_npz(p)


def cmd_compact(args: argparse.Namespace) -> int:
    from training.train.classifier import ClassifierConfig, train_classifier

    cfg = ClassifierConfig(
        net="compact",
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        balance=args.balance,
        seed=args.seed,
        bf16=not args.no_bf16,
        threads=args.threads,
        limit_batches=args.limit_batches,
    )
    train = load_dataset(args.data, "train")
    val = load_dataset(args.val, "public_test")
    print(f"train {len(train)} images, validation {len(val)} images", flush=True)
    best = train_classifier(
        cfg, train, val, Path(args.out), resume=args.resume, progress=not args.quiet
    )
    print(f"best validation accuracy {best['accuracy']:.4f} at epoch {best['epoch']}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from training import report
    from training.evaluate import load_handler

    handler = load_handler(args.model)
    data = load_dataset(args.data, args.split)
    keep = data.labels >= 0
    data = data.subset(keep)
    probs = handler.predict_arrays(data.images)
    summary = report.summary(data.labels, probs, handler.classes)
    print(f"model {args.model} on {args.data}")
    print(report.format_summary(summary))
    if args.json:
        print(json.dumps(summary))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from training.export import export

    path = export(Path(args.checkpoint), args.name, args.version, Path(args.to), fp16=args.fp16)
    print(path)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fer-train", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("compact", help="train the compact CNN (Kuo et al. 2018)")
    c.add_argument("--data", required=True, help="training set: npz, fer2013.csv or folder")
    c.add_argument("--val", required=True, help="validation set (model selection)")
    c.add_argument("--out", required=True, help="run directory for checkpoints and reports")
    c.add_argument("--epochs", type=int, default=60)
    c.add_argument("--batch-size", type=int, default=128)
    c.add_argument("--lr", type=float, default=0.05)
    c.add_argument("--balance", choices=["none", "loss", "sampler"], default="none")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--threads", type=int, default=0)
    c.add_argument("--no-bf16", action="store_true", help="train in float32")
    c.add_argument("--limit-batches", type=int, default=0, help=argparse.SUPPRESS)
    c.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    c.set_defaults(func=cmd_compact)

    e = sub.add_parser("evaluate", help="accuracy of a checkpoint or .mar on a labelled set")
    e.add_argument("--model", required=True, help="a checkpoint (.pt) or an archive (.mar)")
    e.add_argument("--data", required=True, help="npz with images and labels, csv or folder")
    e.add_argument("--split", default=None, help="for fer2013.csv: train/public_test/...")
    e.add_argument("--json", action="store_true", help="last stdout line: one JSON object")
    e.set_defaults(func=cmd_evaluate)

    x = sub.add_parser("export", help="build a TorchServe .mar from a checkpoint")
    x.add_argument("checkpoint")
    x.add_argument("--name", required=True)
    x.add_argument("--version", default="1.0")
    x.add_argument("--to", default="model_store")
    x.add_argument("--fp16", action="store_true", help="store weights as float16")
    x.set_defaults(func=cmd_export)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
