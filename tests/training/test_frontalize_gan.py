"""Frontalization: network shapes, a tiny two-path GAN run that learns to undo the turn on
faces it never saw, the `fer-train frontalize` command, and the exported archive served
by the generator handler. Tiny networks on synthetic faces."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from service.archive import open_archive
from training.__main__ import main
from training.data.synthetic import make_dataset, write_ckplus_npz
from training.export import export
from training.nets.frontalize import Discriminator, Frontalizer
from training.train import checkpoint
from training.train.frontalize import FrontalizeConfig, frontalize_quality, train_frontalize
from training.train.loop import RunOptions

TINY = {"widths": (8, 8, 16, 16), "code": 16, "noise": 4}


def test_shapes() -> None:
    x = torch.rand(3, 1, 48, 48) * 2 - 1
    g = Frontalizer(48, 1, TINY["widths"], TINY["code"], TINY["noise"])
    out = g(x)
    assert out.shape == x.shape and out.abs().max() <= 1
    code = g.encoder(x)
    assert g.decode(code, g.pose_code(torch.tensor([0, 3, 8]))).shape == x.shape
    identity, pose, real = Discriminator(5, 48, 1, TINY["widths"])(x)
    assert identity.shape == (3, 6) and pose.shape == (3, 9) and real.shape == (3,)
    with pytest.raises(ValueError, match="yaw 0|frontal"):
        Frontalizer(yaws=(-30, 30))


def test_learns_to_frontalize_unseen_faces(tmp_path: Path) -> None:
    train = make_dataset(240, seed=1, identities=range(12))
    held = make_dataset(40, seed=2, identities=range(500, 505))
    cfg = FrontalizeConfig(epochs=12, batch_size=24, lr=1e-3, **TINY)
    opts = RunOptions(device="cpu", threads=1, progress=False)
    result = train_frontalize(cfg, train, tmp_path, opts=opts)
    history = result["history"]
    assert history[-1]["loss_l1_frontal"] < 0.8 * history[0]["loss_l1_frontal"]
    state = checkpoint.load(tmp_path / checkpoint.LAST)
    model = Frontalizer(**state["metadata"]["net"]["kwargs"])
    model.load_state_dict(state["model"])
    q = frontalize_quality(model, held, yaws=(45,))["per_yaw"]["45"]
    # closer to the true frontal face than the turned input is, on people never seen
    assert q["l1"] < q["l1_turned_input"]
    assert (tmp_path / "samples_000120.png").exists()

    mar = export(tmp_path / "export.pt", "frontalize", "0.0-test", tmp_path / "store")
    loaded = open_archive(mar, tmp_path / "cache")
    assert loaded.metadata.kind == "frontalizer"
    buf = io.BytesIO()
    Image.fromarray(held.images[0]).save(buf, format="PNG")
    body = json.dumps({"face": base64.b64encode(buf.getvalue()).decode()}).encode()
    row = loaded.handler.handle([{"body": body}], loaded.context)[0]
    image = Image.open(io.BytesIO(base64.b64decode(row["image"])))
    assert image.size == (48, 48) and "probabilities" not in row


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_ckplus_npz(tmp_path / "ckplus.npz", make_dataset(24, identities=6, seed=1))
    argv = ["frontalize", "--ckplus", str(tmp_path / "ckplus.npz"), "--out", str(tmp_path / "run")]
    argv += ["--epochs", "1", "--batch-size", "4", "--device", "cpu", "--quiet"]
    assert main(argv) == 0
    quality = json.loads((tmp_path / "run" / "quality.json").read_text())
    assert quality["holdout_folds"] == [0] and set(quality["per_yaw"]) >= {"0", "30", "60"}
    assert np.isfinite(quality["per_yaw"]["30"]["l1"])
    assert "frontal faces of 4 subjects" in capsys.readouterr().out


def test_pose_accuracy_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A judge that reads the nose's place says "turned" only when the faces are turned,
    so the per-yaw figures move with the yaw; the identity frontalizer changes nothing."""
    from training.pose_accuracy import pose_accuracy

    data = make_dataset(14, seed=3, identities=range(2))
    data.labels[:] = 0

    def judge(images: np.ndarray) -> np.ndarray:
        # class 0 when the bright mass sits in the middle (frontal), class 1 otherwise
        x = images.astype(float)
        cols = np.arange(48)
        centre = (x.sum(1) * cols).sum(1) / x.sum((1, 2))
        frontal = np.abs(centre - 23.5) < 1.0
        return np.stack([frontal, ~frontal], 1).astype(float)

    result = pose_accuracy(judge, data, (0, 45), frontalize=lambda a: a)
    acc = result["accuracy"]
    assert acc["0"]["turned"] > acc["45"]["turned"]
    assert acc["45"]["frontalized"] == acc["45"]["turned"]

    np.savez(tmp_path / "d.npz", images=data.images, labels=data.labels)
    train = make_dataset(64, size=48, seed=1, identities=range(8))
    np.savez(tmp_path / "t.npz", images=train.images, labels=train.labels)
    argv = ["compact", "--data", str(tmp_path / "t.npz"), "--val", str(tmp_path / "t.npz")]
    argv += ["--out", str(tmp_path / "c"), "--widths", "4", "8", "--fc", "8", "--epochs", "1"]
    assert main([*argv, "--batch-size", "16", "--device", "cpu", "--quiet"]) == 0
    argv = ["pose-accuracy", "--judge", str(tmp_path / "c" / "best.pt"), "--data"]
    assert main([*argv, str(tmp_path / "d.npz"), "--yaws", "0", "30", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(printed["accuracy"]) == {"0.0", "30.0"} and printed["n"] == 14
