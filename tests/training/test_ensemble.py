"""The 3-CNN ensemble and the stronger recipes (random erasing, mixup): shapes, size, a tiny
run that learns and resumes exactly, and the `fer-train ensemble` command with its export.
Tiny networks on synthetic faces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from service.archive import open_archive
from training.__main__ import main
from training.data.augment import PRESETS, AugmentConfig, random_erasing
from training.data.synthetic import make_dataset
from training.export import export
from training.nets.ensemble import Ensemble
from training.train import checkpoint
from training.train.classifier import ClassifierConfig, beta_sample, train_classifier
from training.train.loop import RunOptions

TINY = {"widths": (4, 8, 8), "fc": (16,)}
#: Tiny members learn in seconds only without the thesis' heavy dropout.
TINY_TRAIN = {**TINY, "widths": (8, 16, 16), "fc": (32,), "dropout": (0.0, 0.0)}
QUIET = RunOptions(device="cpu", threads=1, progress=False)


def test_shapes_and_size() -> None:
    x = torch.randn(2, 1, 48, 48)
    net = Ensemble(**TINY).eval()  # type: ignore[arg-type]
    final, members, _ = net.forward_all(x)
    assert final.shape == (2, 7) and len(members) == 3
    # the members' kernels: 3, 5, 7
    assert [m.features[0].kernel_size for m in net.members] == [(3, 3), (5, 5), (7, 7)]
    # served logits: the mean of the members' log-probabilities
    mean = torch.stack([torch.log_softmax(z, 1) for z in members]).mean(0)
    torch.testing.assert_close(net(x), mean)
    # the default ensemble fits an archive's 20 MB as float16
    assert sum(p.numel() for p in Ensemble().parameters()) * 2 < 20e6


def test_random_erasing_and_beta() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.zeros(64, 1, 48, 48)
    out = random_erasing(x, AugmentConfig(erase=0.5), gen)
    erased = (out == 0.5).flatten(1).any(1)
    assert 16 < int(erased.sum()) < 48  # about half the images
    share = (out == 0.5).flatten(1).float().mean(1)[erased]
    assert float(share.min()) >= 0.005 and float(share.max()) <= 0.25
    draws = torch.stack([beta_sample(0.4, gen) for _ in range(400)])
    assert float(draws.min()) >= 0 and float(draws.max()) <= 1
    assert abs(float(draws.mean()) - 0.5) < 0.06  # symmetric
    assert float(((draws < 0.1) | (draws > 0.9)).float().mean()) > 0.3  # alpha < 1: U-shaped


def config(**changes: object) -> ClassifierConfig:
    base: dict[str, object] = {
        "net": "ensemble",
        "net_kwargs": dict(TINY_TRAIN),
        "epochs": 6,
        "batch_size": 32,
        "lr": 0.05,
        "warmup_epochs": 1,
        "local_weight": 1.0,
        "augment": PRESETS["flip-only"],
    }
    return ClassifierConfig(**{**base, **changes})  # type: ignore[arg-type]


def test_learns_and_resumes_exactly_with_mixup_and_erasing(tmp_path: Path) -> None:
    strong = {"augment": AugmentConfig(erase=0.5, max_rotation_deg=0), "mixup": 0.4}
    strong_faces = (0.9, 1.0)
    train = make_dataset(560, size=32, seed=1, identities=range(40), intensity_range=strong_faces)
    val = make_dataset(
        70, size=32, seed=2, identities=range(500, 510), intensity_range=strong_faces
    )
    best = train_classifier(config(), train, val, tmp_path / "plain", opts=QUIET)
    assert best["accuracy"] > 0.4  # chance is 1/7

    whole = train_classifier(config(epochs=2, **strong), train, val, tmp_path / "w", opts=QUIET)
    opts = RunOptions(device="cpu", threads=1, progress=False, max_steps=23)  # mid-epoch
    train_classifier(config(epochs=2, **strong), train, val, tmp_path / "p", opts=opts)
    parts = train_classifier(config(epochs=2, **strong), train, val, tmp_path / "p", True, QUIET)
    assert parts["accuracy"] == whole["accuracy"]
    a = checkpoint.load(tmp_path / "w" / checkpoint.LAST)["model"]
    b = checkpoint.load(tmp_path / "p" / checkpoint.LAST)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cli_and_archive(tmp_path: Path) -> None:
    data = make_dataset(64, seed=1, identities=range(8))
    np.savez(tmp_path / "d.npz", images=data.images, labels=data.labels)
    argv = ["ensemble", "--data", str(tmp_path / "d.npz"), "--val", str(tmp_path / "d.npz")]
    argv += ["--out", str(tmp_path / "run"), "--widths", "4", "8", "8", "--fc", "16"]
    argv += ["--epochs", "1", "--batch-size", "16", "--augment", "strong", "--mixup", "0.2"]
    assert main([*argv, "--device", "cpu", "--quiet"]) == 0
    mar = export(tmp_path / "run" / "export.pt", "ensemble", "0.0-test", tmp_path / "store")
    loaded = open_archive(mar, tmp_path / "cache")
    assert loaded.metadata.kind == "classifier"
    probs = loaded.handler.predict_arrays(data.images[:5])
    assert probs.shape == (5, 7)
    np.testing.assert_allclose(probs.sum(1), 1, rtol=1e-5)


@pytest.mark.parametrize("preset", ["strong"])
def test_strong_preset_erases(preset: str) -> None:
    assert PRESETS[preset].erase > 0
