"""The shared training loop: device selection, exact resume from anywhere (mid-epoch, after
a time budget, before an epoch's evaluation), the servable export, and the data bundle.
A toy method (a linear classifier) keeps the loop's own tests to a few seconds; the
classifier trainer is checked the same way at the end."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from training.__main__ import load_dataset, main
from training.data import bundle
from training.data.augment import PRESETS
from training.data.synthetic import make_dataset
from training.evaluate import load_handler
from training.train import checkpoint
from training.train.classifier import ClassifierConfig, train_classifier
from training.train.loop import EXPORT, Context, Method, RunOptions, fit, resolve_device


class Toy(Method):
    """Logistic regression on fixed random data, with dropout (torch's global RNG), a
    per-epoch shuffle and input noise (the loop's generator), and an evaluation that takes
    `eval_seconds`."""

    name = "toy"
    must_match = ("classes",)

    def __init__(self, ctx: Context, epochs: int = 4, eval_seconds: float = 0.0) -> None:
        super().__init__(ctx)
        data = torch.Generator().manual_seed(123)
        self.x = torch.randn(96, 8, generator=data)
        self.y = (self.x[:, 0] > 0).long()
        self.net = nn.Sequential(nn.Dropout(0.2), nn.Linear(8, 2))
        self.opt = torch.optim.SGD(self.net.parameters(), lr=0.1, momentum=0.9)
        self.epochs, self.steps_per_epoch = epochs, 6
        self.eval_seconds = eval_seconds
        self.order = torch.arange(96)
        self.classes = ["no", "yes"]

    def stateful(self) -> dict[str, Any]:
        return {"model": self.net, "optimizer": self.opt}

    def extra_state(self) -> dict[str, Any]:
        return {"classes": self.classes}

    def networks(self) -> list[nn.Module]:
        return [self.net]

    def begin_epoch(self, epoch: int) -> None:
        self.order = torch.randperm(96, generator=self.ctx.gen)

    def step(self, step: int, index: int) -> dict[str, torch.Tensor]:
        idx = self.order[index * 16 : (index + 1) * 16]
        x = self.x[idx] + 0.1 * torch.randn(16, 8, generator=self.ctx.gen)
        loss = F.cross_entropy(self.net(x), self.y[idx])
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        time.sleep(0.01)
        return {"loss": loss.detach()}

    def end_epoch(self, epoch: int) -> dict[str, Any]:
        time.sleep(self.eval_seconds)
        with torch.no_grad():
            accuracy = float((self.net(self.x).argmax(1) == self.y).float().mean())
        return {"accuracy": accuracy}


CPU = RunOptions(device="cpu", progress=False)


def run(
    out: Path, resume: bool = False, epochs: int = 4, eval_seconds: float = 0.0, **options: Any
) -> dict[str, Any]:
    opts = RunOptions(**{**vars(CPU), **options})
    return fit(Toy(Context(opts, seed=5), epochs, eval_seconds), opts, out, resume)


def untimed(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if "seconds" not in k} for r in history]


def same_state(a: Path, b: Path) -> bool:
    sa, sb = checkpoint.load(a / checkpoint.LAST), checkpoint.load(b / checkpoint.LAST)
    return all(torch.equal(sa["model"][k], sb["model"][k]) for k in sa["model"])


def test_device_selection() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="device"):
        resolve_device("tpu")


def test_resume_mid_epoch_is_exact(tmp_path: Path) -> None:
    whole = run(tmp_path / "whole", log_every=4)
    assert whole["stopped"] == "done" and whole["step"] == 24
    parts = tmp_path / "parts"
    for stop in (5, 7, 1, 11):  # 5, 12, 13, 24: mid-epoch, at an epoch's end, mid-row
        result = run(parts, resume=True, max_steps=stop, log_every=4)
    assert result["stopped"] == "done" and result["step"] == 24
    assert same_state(tmp_path / "whole", parts)
    assert untimed(whole["history"]) == untimed(result["history"])
    assert result["best"] == whole["best"]


def test_resume_refuses_a_checkpoint_of_other_data(tmp_path: Path) -> None:
    run(tmp_path, max_steps=3)
    toy = Toy(Context(CPU, seed=5))
    toy.classes = ["yes", "no"]
    with pytest.raises(ValueError, match="classes differ"):
        fit(toy, CPU, tmp_path, resume=True)
    assert checkpoint.load(tmp_path / checkpoint.LAST)["step"] == 3


def test_time_budget_stops_in_time_and_resumes_exactly(tmp_path: Path) -> None:
    # Each epoch: 6 steps of ~10 ms, then an evaluation of 0.5 s; the budget (less the
    # loop's reserve for saving and its margin) allows a few epochs a sitting, so sittings
    # stop mid-epoch or before evaluations.
    whole = run(tmp_path / "whole", epochs=6, eval_seconds=0.5)
    out, sittings, reasons = tmp_path / "budget", 0, set()
    budget = 3.0
    while True:
        sittings += 1
        result = run(out, resume=True, epochs=6, eval_seconds=0.5, time_budget=budget)
        assert result["seconds"] < budget  # stopped before the budget, not after
        reasons.add(result["stopped"])
        state = checkpoint.load(out / checkpoint.LAST)
        assert state["step"] == result["step"]  # the checkpoint is where the run stopped
        assert (out / EXPORT).exists()
        if result["stopped"] == "done" or sittings == 20:
            break
    assert result["stopped"] == "done" and "time_budget" in reasons and sittings > 1
    assert same_state(tmp_path / "whole", out)
    assert untimed(whole["history"]) == untimed(result["history"])


def test_export_holds_the_best_weights_in_float16(tmp_path: Path) -> None:
    run(tmp_path, max_steps=15)
    exported = checkpoint.load(tmp_path / EXPORT)
    best = checkpoint.load(tmp_path / checkpoint.BEST)
    assert exported["best"] == best["best"] and exported["step"] == best["step"] == 12
    for k, v in best["model"].items():
        assert exported["model"][k].dtype == torch.float16
        torch.testing.assert_close(exported["model"][k].float(), v, atol=1e-3, rtol=1e-3)
    assert "optimizer" not in exported  # servable only: small enough to bring back


def test_classifier_resumes_exactly_mid_epoch(tmp_path: Path) -> None:
    """The real classifier trainer (augmentation, dropout, schedule) through the loop."""
    train = make_dataset(160, size=32, seed=1, identities=range(40))
    val = make_dataset(56, size=32, seed=2, identities=range(1000, 1010))
    opts = RunOptions(device="cpu", threads=1, progress=False)

    def cfg() -> ClassifierConfig:
        return ClassifierConfig(
            net_kwargs={"widths": (8, 16), "kernels": (3, 3), "fc": 32},
            epochs=2,
            batch_size=16,
            warmup_epochs=1,
            augment=PRESETS["standard"],
        )

    whole = train_classifier(cfg(), train, val, tmp_path / "whole", opts=opts)
    for stop in (7, 13):  # 10 steps an epoch
        opts.max_steps = stop
        parts = train_classifier(cfg(), train, val, tmp_path / "parts", True, opts)
    assert parts["stopped"] == "done" and parts["accuracy"] == whole["accuracy"]
    assert same_state(tmp_path / "whole", tmp_path / "parts")
    # export.pt is what `fer-train evaluate` and `export` read, as any checkpoint
    probs = load_handler(tmp_path / "parts" / EXPORT).predict_arrays(val.images)
    assert probs.shape == (len(val), 7)


def test_bundle_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    faces = make_dataset(70, seed=4, identities=range(5))
    source = tmp_path / "faces.npz"
    np.savez(
        source,
        images=faces.images,
        labels=faces.labels.astype(np.uint8),
        names=np.array([f"face{i}" for i in range(len(faces))]),
        subject=faces.meta["subject"],
    )
    monkeypatch.setattr(bundle, "COLUMNS", 4)  # several atlas rows and tiles, ragged ends
    monkeypatch.setattr(bundle, "ROWS", 3)
    target = tmp_path / "faces.bundle"  # any name: it is still read as an npz
    assert main(["bundle", str(source), str(target)]) == 0
    back, original = bundle.load_arrays(target), dict(np.load(source))
    assert set(back) == set(original)
    for k, v in original.items():
        assert back[k].dtype == v.dtype and np.array_equal(back[k], v), k
    data = np.load(target)
    assert "images" not in data.files and len(data["images_webp_offsets"]) == 70 // 12 + 2
    read = load_dataset(str(target))  # the same reader as for the npz
    assert np.array_equal(read.images, faces.images) and np.array_equal(read.labels, faces.labels)


def test_cli_stops_and_resumes(tmp_path: Path) -> None:
    """`fer-train compact --max-steps`: stops, and resumes to the end."""
    train = make_dataset(64, size=32, seed=1, identities=range(8))
    np.savez(tmp_path / "train.npz", images=train.images, labels=train.labels)
    argv = ["compact", "--data", str(tmp_path / "train.npz"), "--val", str(tmp_path / "train.npz")]
    argv += ["--out", str(tmp_path / "run"), "--widths", "4", "8", "--fc", "8", "--epochs", "2"]
    argv += ["--batch-size", "16", "--device", "cpu", "--quiet", "--max-steps", "3"]
    assert main(argv) == 0
    assert checkpoint.load(tmp_path / "run" / checkpoint.LAST)["step"] == 3
    assert main([*argv[:-2], "--resume"]) == 0
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [r["step"] for r in history] == [4, 8] and all("val_acc" in r for r in history)
