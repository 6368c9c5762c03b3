"""The classifier trainer learns, resumes exactly, is reproducible from its seed, and the
`fer-train compact` command runs end to end. Tiny CompactCNNs on synthetic faces."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from training import report
from training.__main__ import main
from training.data.augment import PRESETS
from training.data.samples import FaceSet
from training.data.synthetic import make_dataset
from training.evaluate import load_handler
from training.train import checkpoint
from training.train.classifier import ClassifierConfig, train_classifier
from training.train.loop import RunOptions

TINY = {"widths": (8, 16), "kernels": (3, 3), "fc": 32}
FLIP_ONLY = PRESETS["flip-only"]
#: One thread: tiny networks run faster on it than on two busy ones.
QUIET = RunOptions(device="cpu", threads=1, progress=False)


@pytest.fixture(scope="module")
def faces() -> tuple[FaceSet, FaceSet]:
    """Training faces of 40 people and validation faces of 10 other people (32x32)."""
    train = make_dataset(840, size=32, seed=1, identities=range(40), intensity_range=(0.9, 1.0))
    held = make_dataset(
        140, size=32, seed=2, identities=range(1000, 1010), intensity_range=(0.9, 1.0)
    )
    return train, held


def small(faces: tuple[FaceSet, FaceSet]) -> tuple[FaceSet, FaceSet]:
    train, held = faces
    return train.subset(np.arange(160)), held.subset(np.arange(56))


def config(**changes: Any) -> ClassifierConfig:
    """A tiny run with dropout and the full augmentation, so that every
    random stream (init, batch order, augmentation, dropout) is exercised."""
    base: dict[str, Any] = {
        "net_kwargs": dict(TINY),
        "epochs": 3,
        "batch_size": 16,
        "lr": 0.05,
        "warmup_epochs": 1,
    }
    return ClassifierConfig(**{**base, **changes})


def without_time(history: list[dict[str, float]]) -> list[dict[str, float]]:
    return [{k: v for k, v in row.items() if "seconds" not in k} for row in history]


def weights(run: Path) -> dict[str, torch.Tensor]:
    return checkpoint.load(run / checkpoint.LAST)["model"]


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_tiny_cnn_learns_expressions_of_unseen_people(
    faces: tuple[FaceSet, FaceSet], tmp_path: Path
) -> None:
    train, held = faces
    assert not set(train.meta["identity"]) & set(held.meta["identity"])
    # Reaches 0.96-0.97 on held-out people for training seeds 0-4 (about 4 s).
    cfg = config(net_kwargs={**TINY, "dropout": 0.0}, epochs=8, lr=0.02, augment=FLIP_ONLY)
    best = train_classifier(cfg, train, held, tmp_path, opts=QUIET)
    assert best["accuracy"] > 0.9, best["per_class"]
    history = json.loads((tmp_path / "history.json").read_text())
    assert len(history) == 8 and history[0]["val_acc"] < 0.5  # it learned; it did not start so
    for png in ("curves.png", "confusion.png"):
        assert (tmp_path / png).stat().st_size > 0
    # The selected checkpoint, loaded the way evaluation and serving load it, agrees.
    handler = load_handler(tmp_path / checkpoint.BEST)
    probs = handler.predict_arrays(held.images)
    assert report.summary(held.labels, probs, handler.classes)["accuracy"] == best["accuracy"]


def test_resume_extends_a_finished_run(faces: tuple[FaceSet, FaceSet], tmp_path: Path) -> None:
    train, val = small(faces)
    train_classifier(config(epochs=2), train, val, tmp_path, opts=QUIET)
    first = json.loads((tmp_path / "history.json").read_text())
    assert len(first) == 2

    train_classifier(config(epochs=3), train, val, tmp_path, resume=True, opts=QUIET)
    history = json.loads((tmp_path / "history.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert history[:2] == first  # the first two epochs are the earlier run's, untouched
    state = checkpoint.load(tmp_path / checkpoint.LAST)
    assert state["epoch"] == 3 and state["config"]["epochs"] == 3


class Interrupted(Exception):
    """Stands in for a killed process."""


def test_interrupted_run_resumes_to_the_same_result(
    faces: tuple[FaceSet, FaceSet], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train, val = small(faces)
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    train_classifier(config(), train, val, whole, opts=QUIET)

    plot_curves = report.plot_curves

    def die_after_epoch_two(history: list[dict[str, float]], path: Path) -> None:
        plot_curves(history, path)
        if len(history) == 2:  # last.pt of epoch 2 is written; the process dies
            raise Interrupted

    monkeypatch.setattr(report, "plot_curves", die_after_epoch_two)
    with pytest.raises(Interrupted):
        train_classifier(config(), train, val, broken, opts=QUIET)
    monkeypatch.undo()
    assert checkpoint.load(broken / checkpoint.LAST)["epoch"] == 2

    train_classifier(config(), train, val, broken, resume=True, opts=QUIET)
    assert same_weights(whole, broken)
    h_whole = json.loads((whole / "history.json").read_text())
    h_broken = json.loads((broken / "history.json").read_text())
    assert without_time(h_whole) == without_time(h_broken)


def test_same_seed_same_run_other_seed_other_run(
    faces: tuple[FaceSet, FaceSet], tmp_path: Path
) -> None:
    train, val = small(faces)
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        train_classifier(config(seed=seed), train, val, tmp_path / name, opts=QUIET)
    assert same_weights(tmp_path / "a", tmp_path / "b")
    assert not same_weights(tmp_path / "a", tmp_path / "c")
    runs = [json.loads((tmp_path / n / "history.json").read_text()) for n in "abc"]
    assert without_time(runs[0]) == without_time(runs[1]) != without_time(runs[2])


def test_fer_train_compact_cli_end_to_end(
    faces: tuple[FaceSet, FaceSet], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train, val = small(faces)
    np.savez(tmp_path / "train.npz", images=train.images, labels=train.labels)
    np.savez(tmp_path / "val.npz", images=val.images, labels=val.labels)
    out = tmp_path / "run"
    args = [
        "compact",
        "--data",
        str(tmp_path / "train.npz"),
        "--val",
        str(tmp_path / "val.npz"),
        "--out",
        str(out),
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--limit-batches",
        "3",
        "--widths",
        "8",
        "16",
        "--fc",
        "32",
        "--threads",
        "1",
        "--quiet",
    ]
    assert main(args) == 0
    assert "train 160 images, validation 56 images" in capsys.readouterr().out
    state = checkpoint.load(out / checkpoint.BEST)
    kwargs = state["metadata"]["net"]["kwargs"]
    assert list(kwargs["widths"]) == [8, 16] and kwargs["fc"] == 32 and kwargs["input_size"] == 32
    assert sum(p.numel() for p in state["model"].values()) < 100_000  # default: over 1M

    epochs_at = args.index("--epochs") + 1
    assert main([*args[:epochs_at], "2", *args[epochs_at + 1 :], "--resume"]) == 0
    assert len(json.loads((out / "history.json").read_text())) == 2

    capsys.readouterr()
    evaluate = ["evaluate", "--model", str(out / checkpoint.BEST), "--data"]
    assert main([*evaluate, str(tmp_path / "val.npz"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["n"] == 56 and 0.0 <= summary["accuracy"] <= 1.0


def test_fine_tune_starts_from_a_shipped_archive(
    faces: tuple[FaceSet, FaceSet], tmp_path: Path
) -> None:
    """`--init model.mar` takes the archive's (float16) weights; the run's own flags
    (dropout, augmentation, label smoothing) define the new run."""
    from training.export import export

    train, val = small(faces)
    np.savez(tmp_path / "train.npz", images=train.images, labels=train.labels)
    np.savez(tmp_path / "val.npz", images=val.images, labels=val.labels)
    common = ["--data", str(tmp_path / "train.npz"), "--val", str(tmp_path / "val.npz")]
    common += ["--batch-size", "16", "--widths", "8", "16", "--fc", "32", "--threads", "1"]
    assert main(["compact", *common, "--out", str(tmp_path / "a"), "--epochs", "2", "--quiet"]) == 0
    mar = export(tmp_path / "a" / checkpoint.BEST, "tiny", "1.0", tmp_path / "store", fp16=True)

    tune = ["compact", *common, "--out", str(tmp_path / "b"), "--init", str(mar), "--quiet"]
    tune += ["--epochs", "1", "--lr", "0", "--dropout", "0.2", "--augment", "light"]
    tune += ["--label-smoothing", "0", "--warmup-epochs", "0", "--weight-decay", "0"]
    assert main(tune) == 0
    state = checkpoint.load(tmp_path / "b" / checkpoint.LAST)
    assert state["metadata"]["net"]["kwargs"]["dropout"] == 0.2
    assert state["config"]["augment"]["max_rotation_deg"] == 5.0
    assert state["config"]["label_smoothing"] == 0.0
    shipped = checkpoint.load_weights(mar)
    for name, tensor in state["model"].items():
        if name.endswith("weight") and tensor.ndim > 1:  # lr 0: the archive's weights, as is
            assert torch.equal(tensor, shipped[name]), name


def test_distillation_follows_the_teacher(faces: tuple[FaceSet, FaceSet], tmp_path: Path) -> None:
    """With the whole loss on the teacher (weight 1), the student learns what the teacher
    answers, not the labels: a teacher trained on shifted labels (y -> y + 1) passes the
    shift on to people neither has seen. Its answers are cached for a resumed run."""
    train, held = faces
    shifted = FaceSet(train.images, (train.labels + 1) % 7, train.meta)
    base = config(net_kwargs={**TINY, "dropout": 0.0}, epochs=8, lr=0.02, augment=FLIP_ONLY)
    train_classifier(base, shifted, held, tmp_path / "teacher", opts=QUIET)
    teacher = str(tmp_path / "teacher" / checkpoint.LAST)  # BEST is judged on true labels
    taught = load_handler(teacher).predict_arrays(held.images).argmax(1)
    assert np.mean(taught == (held.labels + 1) % 7) > 0.8

    cfg = config(
        net_kwargs={**TINY, "dropout": 0.0},
        epochs=8,
        lr=0.02,
        augment=FLIP_ONLY,
        seed=3,
        distill=teacher,
        distill_weight=1.0,
        distill_temperature=2.0,
    )
    train_classifier(cfg, train, held, tmp_path / "student", opts=QUIET)
    cached = torch.load(tmp_path / "student" / "teacher_probs.pt", weights_only=True)
    assert cached["key"]["teacher"] == str(Path(teacher).resolve())
    assert cached["key"]["temperature"] == 2.0 and cached["probs"].shape == (len(train), 7)
    probs = load_handler(tmp_path / "student" / checkpoint.LAST).predict_arrays(held.images)
    pred = probs.argmax(1)
    assert np.mean(pred == (held.labels + 1) % 7) > 0.8  # the teacher's (shifted) answers
    assert np.mean(pred == held.labels) < 0.3
