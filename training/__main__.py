"""`fer-train`: train, evaluate and export the models of fer-service."""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from training.data.augment import PRESETS
from training.data.samples import FaceSet

if TYPE_CHECKING:
    from training.train.classifier import ClassifierConfig
    from training.train.loop import RunOptions


def load_dataset(path: str, split: str | None = None) -> FaceSet:
    """Read a data set by its form: `.npz` (plain or a bundle), FER2013 `.csv`, or an
    image-folder root."""
    from training.data import fer2013

    p = Path(path)
    if p.is_dir():
        from training.data import folder

        return folder.load_folder(p)
    if p.suffix == ".csv":
        return fer2013.load_csv(p, split)
    with np.load(p) as z:  # a bundle keeps the source's array names
        is_ckplus = "neutral_index" in z.files and "fer_labels" in z.files
    if is_ckplus:  # CK+ codes differ from FER2013's: its reader maps them (contempt dropped)
        from training.data import ckplus

        return ckplus.without_contempt(ckplus.load_ckplus(p))
    return fer2013.load_npz(p)


def _run_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ClassifierConfig fields every classifier-training command takes from its flags."""
    return {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "balance": args.balance,
        "seed": args.seed,
        "limit_batches": args.limit_batches,
        "weight_decay": args.weight_decay,
        "label_smoothing": args.label_smoothing,
        "warmup_epochs": args.warmup_epochs,
        "augment": PRESETS[args.augment],
        "distill": args.distill,
        "distill_weight": args.distill_weight,
        "distill_temperature": args.distill_temperature,
        "mixup": args.mixup,
        "init": args.init,
    }


def _loop_options(args: argparse.Namespace, **defaults: Any) -> RunOptions:
    """The shared training loop's options from the flags of `_add_loop_flags`."""
    from training.train.loop import RunOptions

    return RunOptions(
        device=args.device,
        precision=args.precision,
        threads=args.threads,
        time_budget=args.time_budget,
        max_steps=args.max_steps,
        compile=args.compile,
        progress=not args.quiet,
        started=args.started,
        **defaults,
    )


def _stopped(result: dict[str, Any]) -> None:
    """Say where a run that stopped early stands."""
    if result.get("stopped") in ("time_budget", "max_steps"):
        why = "time budget" if result["stopped"] == "time_budget" else "--max-steps"
        print(
            f"stopped by the {why} at step {result['step']}/{result['total_steps']}: "
            "resumable with --resume; servable weights in OUT/export.pt"
        )


def _train_classifier(cfg: ClassifierConfig, args: argparse.Namespace) -> int:
    """Train `cfg` on `--data`, selecting on `--val`, into `--out`."""
    from training.train.classifier import train_classifier

    train = load_dataset(args.data, "train")
    val = load_dataset(args.val, "public_test")
    print(f"train {len(train)} images, validation {len(val)} images", flush=True)
    best = train_classifier(cfg, train, val, Path(args.out), args.resume, _loop_options(args))
    _stopped(best)
    if best.get("accuracy", -1) >= 0:
        print(f"best validation accuracy {best['accuracy']:.4f} at epoch {best['epoch']}")
    return 0


def cmd_compact(args: argparse.Namespace) -> int:
    from training.train.classifier import ClassifierConfig

    net_kwargs: dict[str, object] = {}
    if args.widths:
        net_kwargs["widths"] = tuple(args.widths)
    if args.fc:
        net_kwargs["fc"] = args.fc
    if args.dropout is not None:
        net_kwargs["dropout"] = args.dropout
    cfg = ClassifierConfig(
        net="compact",
        net_kwargs=net_kwargs,
        **_run_options(args),
    )
    return _train_classifier(cfg, args)


def cmd_ensemble(args: argparse.Namespace) -> int:
    from training.train.classifier import ClassifierConfig

    cfg = ClassifierConfig(
        net="ensemble",
        net_kwargs={"widths": tuple(args.widths), "fc": tuple(args.fc)},
        local_weight=args.member_weight,
        **_run_options(args),
    )
    return _train_classifier(cfg, args)


def cmd_derl_gan(args: argparse.Namespace) -> int:
    from training.data import ckplus
    from training.train.derl_gan import GanConfig, de_expression_quality, self_pairs, train_gan

    if args.reconstruct:  # pre-training on a set without pairs: every face its own target
        faces = load_dataset(args.data, "train")
        cfg = GanConfig(epochs=args.epochs, seed=args.seed, targets="self", init=args.init)
        print(f"{len(faces)} faces to reconstruct", flush=True)
        result = train_gan(
            cfg, faces, self_pairs(len(faces)), Path(args.out), args.resume, _loop_options(args)
        )
        _stopped(result)
        return 0
    data = ckplus.without_contempt(ckplus.load_ckplus(args.data))
    held = np.isin(data.meta["fold"], args.holdout_folds)
    train, test = data.subset(~held), data.subset(held)
    cfg = GanConfig(
        epochs=args.epochs,
        seed=args.seed,
        holdout_folds=tuple(args.holdout_folds),
        cross_sequence=args.cross_sequence,
        init=args.init,
    )
    pairs = ckplus.pairs(train, cross_sequence=args.cross_sequence)
    print(
        f"{len(pairs)} training pairs from {len(np.unique(train.meta['subject']))} subjects",
        flush=True,
    )
    result = train_gan(cfg, train, pairs, Path(args.out), args.resume, _loop_options(args))
    _stopped(result)
    if len(test) and result["stopped"] == "done":
        from training.nets.derl import Generator
        from training.train import checkpoint

        state = checkpoint.load(Path(args.out) / checkpoint.LAST)
        gen = Generator(**state["generator"])
        gen.load_state_dict(state["model"])
        quality: dict[str, object] = {
            **de_expression_quality(gen, test, ckplus.pairs(test)),
            "holdout_folds": list(args.holdout_folds),
        }
        (Path(args.out) / "quality.json").write_text(json.dumps(quality, indent=1))
        print("de-expression on held-out subjects:", json.dumps(quality))
    return 0


def derl_config(args: argparse.Namespace) -> ClassifierConfig:
    """The stage-2 run that `fer-train derl` flags describe."""
    from training.train.classifier import ClassifierConfig

    return ClassifierConfig(
        net="derl",
        net_kwargs={
            "local_width": args.local_width,
            "local_convs": args.local_convs,
            "local_growth": args.local_growth,
        },
        **_run_options(args),
        mean=0.5,
        std=0.5,
        generator=args.generator,
    )


def cmd_derl(args: argparse.Namespace) -> int:
    return _train_classifier(derl_config(args), args)


def cmd_derl_cv(args: argparse.Namespace) -> int:
    from training.data import ckplus
    from training.train.derl_cv import CvConfig, run_cv

    cfg = CvConfig(
        folds=tuple(args.folds),
        gan_epochs=args.gan_epochs,
        epochs=args.epochs,
        lr=args.lr,
        seed=args.seed,
        pretrained=args.pretrained,
    )
    s = run_cv(cfg, ckplus.load_ckplus(args.data), Path(args.out), _loop_options(args))
    if s["stopped"] != "done":
        print(f"stopped by the time budget after {len(s['folds'])} folds: run it again to resume")
        return 0
    print(
        f"CK+ 10-fold: mean accuracy {s['mean_accuracy']:.4f} (std {s['std_accuracy']:.4f}), "
        f"pooled {s['pooled_accuracy']:.4f}"
    )
    return 0


def _period(text: str) -> int:
    """A number of steps between updates: a whole number of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def cmd_tdgan(args: argparse.Namespace) -> int:
    from training.data import ckplus
    from training.nets.tdgan import PAPER_WIDTHS
    from training.train.tdgan import TdganConfig, train_tdgan

    data = ckplus.load_ckplus(args.ckplus)
    data = data.subset(~np.isin(data.meta["fold"], args.holdout_folds))
    peaks = ckplus.tdgan_protocol(data)
    peaks = peaks.subset(~peaks.meta["neutral"].astype(bool))
    fer = load_dataset(args.fer2013, "train")
    expressions = FaceSet(
        np.concatenate([fer.images, peaks.images]), np.concatenate([fer.labels, peaks.labels])
    )
    net_kwargs: dict[str, object] = {}
    if args.paper_widths:
        net_kwargs.update(PAPER_WIDTHS)
    if args.widths:
        net_kwargs["widths"] = tuple(args.widths)
    cfg = TdganConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        d_face_every=args.d_face_every,
        d_expression_every=args.d_expression_every,
        expression_fake_class=args.expression_fake_class,
        critic_augment=args.critic_augment,
        critic_warmup=args.critic_warmup,
        lambda_expression=args.lambda_expression,
        net_kwargs=net_kwargs,
        seed=args.seed,
        holdout_folds=tuple(args.holdout_folds),
    )
    opts = _loop_options(args, log_every=args.log_every, save_every=args.save_every)
    val = load_dataset(args.val, "public_test") if args.val else None
    print(
        f"faces: {len(data)} images of {len(np.unique(data.meta['subject']))} CK+ subjects; "
        f"expressions: {len(fer)} FER2013 + {len(peaks)} CK+ peaks"
        + (f"; validation {len(val)}" if val is not None else ""),
        flush=True,
    )
    result = train_tdgan(cfg, data, expressions, Path(args.out), val, args.resume, opts)
    _stopped(result)
    print(f"step {result['step']}/{result['total_steps']}")
    if result["best"].get("step"):
        best = result["best"]
        print(f"best validation accuracy {best['accuracy']:.4f} at step {best['step']}")
    return 0


def cmd_frontalize(args: argparse.Namespace) -> int:
    from training.nets.frontalize import Frontalizer
    from training.train import checkpoint
    from training.train.frontalize import FrontalizeConfig, frontalize_quality, train_frontalize

    train, held = _ckplus_split(args.ckplus, args.holdout_folds)
    cfg = FrontalizeConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lambda_l1=args.lambda_l1,
        seed=args.seed,
        holdout_folds=tuple(args.holdout_folds),
    )
    print(f"{len(train)} frontal faces of {len(np.unique(train.meta['subject']))} subjects")
    out = Path(args.out)
    result = train_frontalize(cfg, train, out, args.resume, _loop_options(args))
    _stopped(result)
    if len(held) and result["stopped"] == "done":
        state = checkpoint.load(out / checkpoint.LAST)
        model = Frontalizer(**state["metadata"]["net"]["kwargs"])
        model.load_state_dict(state["model"])
        quality = {
            **frontalize_quality(model, held),
            "holdout_folds": list(args.holdout_folds),
            "pairs": "held-out CK+ subjects' frontal crops turned by training/data/pose.py",
        }
        (out / "quality.json").write_text(json.dumps(quality, indent=1))
        print("frontalization on held-out subjects:", json.dumps(quality))
    return 0


def cmd_pose_accuracy(args: argparse.Namespace) -> int:
    from training.evaluate import load_handler
    from training.pose_accuracy import load_frontalizer, pose_accuracy

    data = load_dataset(args.data, args.split)
    data = data.subset(data.labels >= 0)
    if args.limit:
        data = data.subset(np.arange(min(args.limit, len(data))))
    frontalize = load_frontalizer(args.frontalizer) if args.frontalizer else None
    result = pose_accuracy(
        load_handler(args.judge).predict_arrays, data, tuple(args.yaws), frontalize
    )
    result.update(judge=args.judge, data=args.data, frontalizer=args.frontalizer or None)
    for yaw, row in result["accuracy"].items():
        print(f"yaw {yaw:>5}: " + "  ".join(f"{k} {v:.4f}" for k, v in row.items()))
    if args.json:
        print(json.dumps(result))
    return 0


def _ckplus_split(path: str, holdout_folds: list[int]) -> tuple[FaceSet, FaceSet]:
    """All CK+ rows of the other folds, and of `holdout_folds` (subject-disjoint)."""
    from training.data import ckplus

    data = ckplus.load_ckplus(path)
    held = np.isin(data.meta["fold"], holdout_folds)
    return data.subset(~held), data.subset(held)


def cmd_identity(args: argparse.Namespace) -> int:
    from training.train.identity import Embedder, IdentityConfig, identification, train_identity

    train, held = _ckplus_split(args.data, args.holdout_folds)
    cfg = IdentityConfig(epochs=args.epochs, seed=args.seed)
    print(f"{len(train)} images of {len(np.unique(train.meta['subject']))} subjects", flush=True)
    last = train_identity(cfg, train, Path(args.out), args.resume, _loop_options(args))
    if last["stopped"] != "done":
        print("stopped before the end: resumable with --resume")
        return 0
    print(f"training accuracy {last['train_acc']:.4f}")
    if len(held):
        figures = {
            **identification(Embedder.load(Path(args.out) / "identity.pt"), held),
            "holdout_folds": list(args.holdout_folds),
        }
        (Path(args.out) / "identification.json").write_text(json.dumps(figures, indent=1))
        print("on held-out subjects (real images):", json.dumps(figures))
    return 0


def cmd_transfer_quality(args: argparse.Namespace) -> int:
    from training.evaluate import load_handler
    from training.train.identity import Embedder, identification
    from training.transfer_quality import load_critic, load_generator, transfer_quality

    _, faces = _ckplus_split(args.ckplus, args.holdout_folds)
    expressions = load_dataset(args.expressions, "public_test")
    expressions = expressions.subset(expressions.labels >= 0)
    embed = Embedder.load(args.identity)
    generate = load_generator(args.model, args.seed)
    result = transfer_quality(
        generate,
        load_handler(args.judge).predict_arrays,
        embed,
        faces,
        expressions,
        pairs=args.pairs,
        seed=args.seed,
        critic=load_critic(args.model),
    )
    result["identity"]["reference_real_images"] = identification(embed, faces)
    if args.grid:
        from training import report
        from training.transfer_quality import transfer_grid

        columns = transfer_grid(generate, faces, expressions)  # after the figures: same noise
        report.save_grid(columns, Path(args.grid), scale=2)
        print(f"transfer grid: {args.grid}")
    result.update(
        model=args.model,
        judge=args.judge,
        identity_model=args.identity,
        expressions=args.expressions,
        holdout_folds=list(args.holdout_folds),
    )
    e, i, r = result["expression"], result["identity"], result["reconstruction"]
    print(
        f"expression hit rate {e['generated']['accuracy']:.4f} (judge on the expression images "
        f"{e['reference_expression_images']['accuracy']:.4f}, on the unchanged faces "
        f"{e['baseline_unchanged_face']['accuracy']:.4f}, chance {e['chance']:.4f})"
    )
    if "critic" in e:
        print(
            f"TDGAN's expression discriminator: accuracy on the expression images "
            f"{e['critic']['expression_images']['accuracy']:.4f}, reads the generated faces "
            f"as requested {e['critic']['generated']['accuracy']:.4f}"
        )
    print(
        f"identity: similarity to own face input {i['similarity_to_own_face_input']:.4f}, "
        f"to other people's {i['similarity_to_other_peoples_faces']:.4f}; rank-1 "
        f"{i['gallery']['rank1']:.4f} (real images {i['reference_real_images']['rank1']:.4f}, "
        f"chance {i['gallery']['chance']:.4f})"
    )
    print(
        f"reconstruction: face L1 {r['face_l1']:.4f} SSIM {r['face_ssim']:.4f}; "
        f"expression L1 {r['expression_l1']:.4f} SSIM {r['expression_ssim']:.4f}"
    )
    if args.json:
        print(json.dumps(result))
    return 0


def cmd_sequence(args: argparse.Namespace) -> int:
    from training.train.sequence import SequenceConfig, sequence_sets, train_sequence

    cfg = SequenceConfig(
        backbone=args.backbone,
        epochs=args.epochs,
        passes=args.passes,
        hidden=args.hidden,
        lr=args.lr,
        seed=args.seed,
        holdout_folds=list(args.holdout_folds),
        synthetic=args.synthetic,
        window=args.window,
    )
    train, val = sequence_sets(args.ckplus, cfg)
    print(f"train {len(train)} sequences, held-out CK+ {len(val)} sequences", flush=True)
    best = train_sequence(cfg, train, val, Path(args.out), args.resume, _loop_options(args))
    _stopped(best)
    figures = {k: best[k]["accuracy"] for k in ("frame_mean", "frame_last")}
    print(
        f"held-out CK+ sequences (n={best['frame_mean']['n']}): sequence model "
        f"{best.get('accuracy', -1):.4f} at epoch {best.get('epoch')}; frame classifier "
        f"alone: mean of frames {figures['frame_mean']:.4f}, last frame {figures['frame_last']:.4f}"
    )
    if args.json:
        print(json.dumps(best))
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


def cmd_bundle(args: argparse.Namespace) -> int:
    from training.data.bundle import write_bundle

    sizes = write_bundle(args.source, args.target)
    print(
        f"{args.target}: {sizes['bundle_bytes'] / 1e6:.1f} MB "
        f"(source {sizes['source_bytes'] / 1e6:.1f} MB), reads back identical"
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from training.export import export

    path = export(Path(args.checkpoint), args.name, args.version, Path(args.to), fp16=args.fp16)
    print(path)
    return 0


def cmd_repack(args: argparse.Namespace) -> int:
    from training.export import repack

    for archive in args.archives:
        source = Path(archive)
        with tempfile.TemporaryDirectory() as tmp:  # the target may be the source itself
            staged = Path(tmp) / source.name
            shutil.copy(source, staged)
            print(repack(staged, Path(args.to or source.parent)))
    return 0


def _add_loop_flags(c: argparse.ArgumentParser) -> None:
    """The flags of the shared training loop (`_loop_options`), which every training
    command takes, and --seed."""
    from training.train.loop import COMPILE_MODES, DEVICES, PRECISIONS

    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--device", choices=DEVICES, default="auto", help="auto: CUDA when present")
    c.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="auto: bfloat16 autocast on CUDA and on CPUs with native bfloat16, else float32",
    )
    c.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    c.add_argument(
        "--time-budget",
        type=float,
        default=0,
        metavar="SECONDS",
        help="stop cleanly before this many seconds, resumable, with OUT/export.pt",
    )
    c.add_argument("--max-steps", type=int, default=0, help="stop this run after N steps")
    c.add_argument(
        "--compile", choices=COMPILE_MODES, default="none", help="torch.compile the networks"
    )
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    c.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")


def _add_holdout_folds(c: argparse.ArgumentParser, default: list[int], why: str) -> None:
    c.add_argument(
        "--holdout-folds", type=int, nargs="*", default=default, help=f"CK+ folds whose {why}"
    )


def _add_run_flags(c: argparse.ArgumentParser) -> None:
    """The flags behind `_run_options`, shared by the classifier-training commands."""
    c.add_argument("--batch-size", type=int, default=128)
    c.add_argument("--lr", type=float, default=0.05)
    c.add_argument("--weight-decay", type=float, default=5e-4)
    c.add_argument("--label-smoothing", type=float, default=0.1)
    c.add_argument("--warmup-epochs", type=int, default=2)
    c.add_argument(
        "--augment", choices=sorted(PRESETS), default="standard", help="augmentation strength"
    )
    c.add_argument("--balance", choices=["none", "loss", "sampler"], default="none")
    c.add_argument(
        "--distill", default="", help="teacher (.mar or checkpoint) for knowledge distillation"
    )
    c.add_argument(
        "--distill-weight", type=float, default=0.5, help="share of the distillation loss"
    )
    c.add_argument("--distill-temperature", type=float, default=4.0)
    c.add_argument(
        "--mixup", type=float, default=0.0, metavar="ALPHA", help="mixup, Beta(ALPHA, ALPHA)"
    )
    c.add_argument(
        "--init", default="", help="start from a checkpoint's or .mar's weights (fine-tune)"
    )
    _add_loop_flags(c)
    c.add_argument("--limit-batches", type=int, default=0, help=argparse.SUPPRESS)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fer-train", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("compact", help="train the compact CNN (Kuo et al. 2018)")
    c.add_argument("--data", required=True, help="training set: npz, fer2013.csv or folder")
    c.add_argument("--val", required=True, help="validation set (model selection)")
    c.add_argument("--out", required=True, help="run directory for checkpoints and reports")
    c.add_argument("--epochs", type=int, default=60)
    _add_run_flags(c)
    c.add_argument(
        "--widths",
        type=int,
        nargs=2,
        metavar=("W1", "W2"),
        help="conv channels of the two blocks (default 32 64)",
    )
    c.add_argument("--fc", type=int, default=0, help="width of the FC layers (default 256)")
    c.add_argument("--dropout", type=float, default=None, help="FC dropout (default 0.5)")
    c.set_defaults(func=cmd_compact)

    n = sub.add_parser(
        "ensemble", help="the 3-CNN ensemble (3x3, 5x5, 7x7 kernels), members trained together"
    )
    n.add_argument("--data", required=True)
    n.add_argument("--val", required=True)
    n.add_argument("--out", required=True)
    n.add_argument("--epochs", type=int, default=60)
    n.add_argument("--widths", type=int, nargs=3, default=[32, 64, 128], help="conv widths")
    n.add_argument("--fc", type=int, nargs="+", default=[256, 128], help="FC widths")
    n.add_argument(
        "--member-weight", type=float, default=1.0, help="weight of each member's own loss"
    )
    _add_run_flags(n)
    n.set_defaults(func=cmd_ensemble)

    g = sub.add_parser("derl-gan", help="DeRL stage 1: the de-expression cGAN on CK+ pairs")
    g.add_argument("--data", required=True, help="the CK+ npz (with --reconstruct: any set)")
    g.add_argument(
        "--reconstruct",
        action="store_true",
        help="pre-train on a set without pairs (FER2013): every face is its own target",
    )
    g.add_argument(
        "--init", default="", help="start G from a derl-gan or DeRL checkpoint, or a .mar"
    )
    g.add_argument("--out", required=True)
    g.add_argument("--epochs", type=int, default=100)
    _add_holdout_folds(g, [0], "subjects are kept out (for de-expression quality)")
    g.add_argument(
        "--cross-sequence",
        action="store_true",
        help="also pair expressive frames with the subject's other neutral frames",
    )
    _add_loop_flags(g)
    g.set_defaults(func=cmd_derl_gan)

    d = sub.add_parser("derl", help="DeRL stage 2: local CNNs + classifier on a frozen G")
    d.add_argument("--data", required=True)
    d.add_argument("--val", required=True)
    d.add_argument("--generator", required=True, help="stage-1 checkpoint (derl-gan last.pt)")
    d.add_argument("--out", required=True)
    d.add_argument("--epochs", type=int, default=40)
    d.add_argument("--local-width", type=int, default=64, help="channels of the local CNNs")
    d.add_argument(
        "--local-convs", type=int, default=1, help="3x3 convs per pooling stage of a local CNN"
    )
    d.add_argument(
        "--local-growth",
        type=int,
        default=1,
        help="multiply a local CNN's channels by this after every pooling (2: VGG-style)",
    )
    _add_run_flags(d)
    d.set_defaults(func=cmd_derl)

    v = sub.add_parser("derl-cv", help="DeRL on CK+: subject-independent 10-fold CV")
    v.add_argument("--data", required=True, help="the CK+ npz")
    v.add_argument("--out", required=True)
    v.add_argument("--folds", type=int, nargs="*", default=list(range(10)))
    v.add_argument(
        "--gan-epochs",
        type=int,
        default=60,
        help="stage-1 epochs per fold (0 with --pretrained: keep its generator)",
    )
    v.add_argument("--epochs", type=int, default=40)
    v.add_argument("--lr", type=float, default=0.01)
    v.add_argument(
        "--pretrained",
        default="",
        help="a DeRL stage-2 checkpoint trained without CK+ (FER2013): every fold fine-tunes it",
    )
    _add_loop_flags(v)
    v.set_defaults(func=cmd_derl_cv)

    t = sub.add_parser(
        "tdgan", help="TDGAN: expression transfer; CK+ faces, FER2013 + CK+ expressions"
    )
    t.add_argument("--ckplus", required=True, help="the CK+ npz (faces, and peak expressions)")
    t.add_argument("--fer2013", required=True, help="FER2013 Training: npz or fer2013.csv")
    t.add_argument("--val", help="optional: evaluate the expression branch on it every epoch")
    t.add_argument("--out", required=True)
    t.add_argument("--epochs", type=int, default=30)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--lr", type=float, default=1e-4)
    t.add_argument(
        "--widths",
        type=int,
        nargs=3,
        metavar=("W1", "W2", "W3"),
        help="encoder widths (default 16 32 64; the paper's 32 64 128)",
    )
    t.add_argument(
        "--paper-widths",
        action="store_true",
        help="the paper's widths everywhere (encoders 32 64 128, decoder 128 and "
        "256 128 64, noise 256): about 2x the time per step",
    )
    t.add_argument(
        "--d-face-every",
        type=_period,
        default=5,
        help="steps between face discriminator updates (default 5, the paper's)",
    )
    t.add_argument(
        "--d-expression-every",
        type=_period,
        default=10,
        help="steps between expression discriminator updates (default 10, the paper's; "
        "1 gives the generator a trained expression critic sooner)",
    )
    t.add_argument(
        "--expression-fake-class",
        action="store_true",
        help="the expression discriminator also learns a 'fake' class on generated faces, "
        "as the face discriminator does (not the paper's: its critic sees real images only; at "
        "the paper's weights it collapsed the generator on CPU, see MODEL_CARD.md)",
    )
    t.add_argument(
        "--critic-augment",
        action="store_true",
        help="the expression discriminator sees every image, real or generated, through the "
        "strong training augmentation (warp, lighting, erasing; differentiable), so that "
        "the generator cannot please it with pixel patterns (not the paper's)",
    )
    t.add_argument(
        "--critic-warmup",
        type=int,
        default=0,
        metavar="STEPS",
        help="the run's first STEPS steps train only the expression discriminator, on real "
        "images (counted in the run's steps; not the paper's)",
    )
    t.add_argument(
        "--lambda-expression",
        type=float,
        default=0.8,
        help="weight of the generator's expression loss, CE(D_expression(fake), label) "
        "(default 0.8, the paper's)",
    )
    _add_holdout_folds(t, [], "subjects are left out of faces and expressions")
    t.add_argument("--save-every", type=int, default=500, help="steps between checkpoints")
    t.add_argument("--log-every", type=int, default=50, help="steps per history row")
    _add_loop_flags(t)
    t.set_defaults(func=cmd_tdgan)

    f = sub.add_parser(
        "frontalize", help="pose frontalization GAN on CK+ faces turned by a 3D-aware warp"
    )
    f.add_argument("--ckplus", required=True, help="the CK+ npz (frontal faces, subjects)")
    f.add_argument("--out", required=True)
    f.add_argument("--epochs", type=int, default=60)
    f.add_argument("--batch-size", type=int, default=32)
    f.add_argument("--lambda-l1", type=float, default=100.0, help="weight of each L1 term")
    _add_holdout_folds(f, [0], "subjects are left out (for the quality figures)")
    _add_loop_flags(f)
    f.set_defaults(func=cmd_frontalize)

    i = sub.add_parser(
        "identity", help="identity embedding on CK+ subjects (judge of transfer quality)"
    )
    i.add_argument("--data", required=True, help="the CK+ npz")
    i.add_argument("--out", required=True)
    _add_holdout_folds(i, [0], "subjects are left out (the people transfers are judged on)")
    i.add_argument("--epochs", type=int, default=40)
    _add_loop_flags(i)
    i.set_defaults(func=cmd_identity)

    q = sub.add_parser(
        "transfer-quality", help="expression, identity and reconstruction figures of a TDGAN"
    )
    q.add_argument(
        "--model",
        required=True,
        help="a tdgan checkpoint (.pt: its expression discriminator is scored too) or tdgan.mar",
    )
    q.add_argument("--judge", required=True, help="classifier .mar/.pt that did not train with it")
    q.add_argument("--identity", required=True, help="identity.pt from `fer-train identity`")
    q.add_argument("--ckplus", required=True, help="the CK+ npz (faces of held-out subjects)")
    q.add_argument("--expressions", required=True, help="labelled expression images not trained on")
    _add_holdout_folds(q, [0], "subjects give the faces (held out of the GAN's training)")
    q.add_argument("--pairs", type=int, default=1000)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument(
        "--grid",
        default="",
        metavar="PNG",
        help="also write a transfer matrix: held-out faces x one expression image per class",
    )
    q.add_argument("--json", action="store_true", help="last stdout line: one JSON object")
    q.set_defaults(func=cmd_transfer_quality)

    a = sub.add_parser(
        "pose-accuracy", help="a classifier's accuracy on faces turned to each yaw (+ frontalized)"
    )
    a.add_argument("--judge", required=True, help="classifier .mar or checkpoint")
    a.add_argument("--data", required=True, help="labelled frontal crops (npz, csv, folder)")
    a.add_argument("--split", default=None)
    a.add_argument("--frontalizer", default="", help="frontalize .mar / checkpoint (optional)")
    a.add_argument("--yaws", type=float, nargs="+", default=[0, 15, 30, 45, 60])
    a.add_argument("--limit", type=int, default=0, help="only the first N images")
    a.add_argument("--json", action="store_true", help="last stdout line: one JSON object")
    a.set_defaults(func=cmd_pose_accuracy)

    s = sub.add_parser(
        "sequence", help="frame-to-sequence model: a GRU over a frozen frame classifier's features"
    )
    s.add_argument("--ckplus", required=True, help="the CK+ npz (sequences, onsets, folds)")
    s.add_argument("--backbone", default="model_store/compact.mar", help="compact .mar or .pt")
    s.add_argument("--out", required=True)
    s.add_argument("--epochs", type=int, default=8, help="epochs of --passes passes each")
    s.add_argument("--passes", type=int, default=4, help="passes over the data per epoch")
    s.add_argument("--hidden", type=int, default=64, help="GRU width")
    s.add_argument("--lr", type=float, default=2e-3)
    s.add_argument("--synthetic", type=int, default=700, help="synthetic onset sequences")
    s.add_argument(
        "--window", type=int, default=0, help="see only the last N frames (1: a frame head)"
    )
    _add_holdout_folds(s, [0], "subjects' real sequences are the held-out evaluation")
    s.add_argument("--json", action="store_true", help="last stdout line: one JSON object")
    _add_loop_flags(s)
    s.set_defaults(func=cmd_sequence)

    e = sub.add_parser("evaluate", help="accuracy of a checkpoint or .mar on a labelled set")
    e.add_argument("--model", required=True, help="a checkpoint (.pt) or an archive (.mar)")
    e.add_argument("--data", required=True, help="npz with images and labels, csv or folder")
    e.add_argument("--split", default=None, help="for fer2013.csv: train/public_test/...")
    e.add_argument("--json", action="store_true", help="last stdout line: one JSON object")
    e.set_defaults(func=cmd_evaluate)

    b = sub.add_parser(
        "bundle", help="lossless compact copy of an image npz (images as WebP) to carry along"
    )
    b.add_argument("source", help="an npz with uint8 `images` [N,H,W]")
    b.add_argument("target", help="the bundle to write (.npz; read wherever an npz is)")
    b.set_defaults(func=cmd_bundle)

    x = sub.add_parser("export", help="build a TorchServe .mar from a checkpoint")
    x.add_argument("checkpoint")
    x.add_argument("--name", required=True)
    x.add_argument("--version", default="1.0")
    x.add_argument("--to", default="model_store")
    x.add_argument("--fp16", action="store_true", help="store weights as float16")
    x.set_defaults(func=cmd_export)

    r = sub.add_parser(
        "repack",
        help="re-write archives with this checkout's handler modules, keeping their "
        "network, weights (byte for byte), metadata, name and version",
    )
    r.add_argument("archives", nargs="+", help=".mar files")
    r.add_argument("--to", help="store to write into (default: each archive's own folder)")
    r.set_defaults(func=cmd_repack)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.started = time.monotonic()  # a --time-budget counts from here: loading data too
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
