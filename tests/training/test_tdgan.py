"""TDGAN: network shapes, a tiny training run that resumes, the `fer-train tdgan` command,
and the exported archive served by the generator handler. Tiny networks on synthetic
faces; a few seconds in all."""

from __future__ import annotations

import base64
import io
import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from service.archive import open_archive
from service.schemas import Generation
from training.__main__ import main
from training.data.samples import CLASSES, FaceSet
from training.data.synthetic import make_dataset, write_ckplus_npz
from training.data.tensors import to_float
from training.export import export
from training.nets.tdgan import (
    TDGAN,
    Decoder,
    Discriminator,
    Encoder,
    FCHead,
    InceptionResNetBlock,
    build,
    feature_size,
    instance_norm,
)
from training.train import checkpoint
from training.train.loop import Context, RunOptions
from training.train.tdgan import LOSSES, TdganConfig, TdganMethod, train_tdgan
from training.transfer_quality import load_critic

TINY: dict[str, object] = {
    "widths": (4, 8, 8),
    "fc": 16,
    "embed": 8,
    "up_widths": (8, 8, 4),
    "noise": 4,
}


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Tiny networks run far faster on one thread than on two (busy) ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize(("size", "pools", "side"), [(48, 3, 6), (64, 4, 4), (128, 4, 8)])
def test_network_shapes(size: int, pools: int, side: int) -> None:
    x = torch.rand(2, 1, size, size)
    assert feature_size(size, pools) == side
    block = InceptionResNetBlock(8)
    assert block(torch.rand(2, 8, 5, 5)).shape == (2, 8, 5, 5)
    enc = Encoder(1, (4, 8, 8), pools=pools)
    features = enc(x)
    assert features.shape == (2, 8, side, side)
    dec = Decoder(8, noise=4, embed=8, up_widths=(8,) * (pools - 1) + (4,))
    image = dec(features, features)
    assert image.shape == x.shape and image.min() >= 0 and image.max() <= 1
    head = FCHead(8 * side * side, 7, fc=16)
    assert head(features).shape == (2, 7)
    ups = (8,) * (pools - 1) + (4,)
    for classes in (7, 5 + 1):  # expression; 5 identities + "fake"
        d_features, logits = Discriminator(classes, size, 1, (4, 8, 8), 16, pools)(x)
        assert d_features.shape == features.shape and logits.shape == (2, classes)
    net = TDGAN(7, size, 1, (4, 8, 8), 16, 8, ups, noise=4, pools=pools)
    assert net.generate(x, x).shape == x.shape
    out = net(x, x)
    assert out.shape == x.shape and out.min() >= -1 and out.max() <= 1
    assert net.classify(x).shape == (2, 7)


@pytest.mark.parametrize("affine", [True, False])
def test_instance_norm_is_instancenorm2d(affine: bool) -> None:
    torch.manual_seed(0)
    ours = instance_norm(6, eps=1e-3, affine=affine)
    reference = torch.nn.InstanceNorm2d(6, eps=1e-3, affine=affine)
    if affine:
        torch.nn.init.normal_(reference.weight)
        torch.nn.init.normal_(reference.bias)
    ours.load_state_dict(reference.state_dict())  # the same parameter names and shapes
    x = torch.randn(3, 6, 5, 7) * 4 + 2
    torch.testing.assert_close(ours(x), reference(x), rtol=1e-4, atol=1e-5)


def test_noise_is_drawn_unless_given() -> None:
    torch.manual_seed(0)
    net = TDGAN(input_size=48, **TINY).eval()  # type: ignore[arg-type]
    x = torch.rand(1, 1, 48, 48)
    noise = torch.rand(1, 4, 6, 6)
    assert torch.equal(net.generate(x, x, noise), net.generate(x, x, noise))
    assert not torch.equal(net.generate(x, x), net.generate(x, x))


def test_geometry_is_checked() -> None:
    with pytest.raises(ValueError, match="multiple of 8"):
        TDGAN(input_size=44)
    with pytest.raises(ValueError, match="up_widths"):
        TDGAN(up_widths=(8, 8))


def snapshot(nets: dict[str, nn.Module]) -> dict[str, list[torch.Tensor]]:
    """Copies of every parameter of each named network."""
    return {k: [p.detach().clone() for p in n.parameters()] for k, n in nets.items()}


def changed(nets: dict[str, nn.Module], before: dict[str, list[torch.Tensor]]) -> set[str]:
    """The names of the networks whose parameters differ from the `snapshot`."""
    return {
        k
        for k, n in nets.items()
        if any(not torch.equal(a, p) for a, p in zip(before[k], n.parameters(), strict=True))
    }


@pytest.fixture(scope="module")
def sets() -> tuple[FaceSet, FaceSet]:
    """Faces of 6 synthetic people (their `subject` is the identity) and expressions of
    others, 48x48."""
    faces = make_dataset(24, identities=6, seed=1)
    expressions = make_dataset(28, identities=range(100, 110), seed=2)
    return faces, expressions


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, sets: tuple[FaceSet, FaceSet]) -> Path:
    """7 steps in two sittings: 4 steps, then resumed for 3 more (epoch = 3 steps)."""
    faces, expressions = sets
    out = tmp_path_factory.mktemp("tdgan")
    opts = RunOptions(device="cpu", log_every=2, save_every=2, max_steps=4, progress=False)
    cfg = TdganConfig(epochs=3, batch_size=8, net_kwargs=dict(TINY))
    first = train_tdgan(cfg, faces, expressions, out, val=expressions, opts=opts)
    assert first["step"] == 4 and first["total_steps"] == 9 and first["stopped"] == "max_steps"
    opts.max_steps = 3
    cfg = TdganConfig(epochs=3)  # the rest comes from the checkpoint
    second = train_tdgan(cfg, faces, expressions, out, val=expressions, resume=True, opts=opts)
    assert second["step"] == 7
    return out


def test_training_losses_are_finite(run: Path) -> None:
    history = json.loads((run / "history.json").read_text())
    for row in history:
        for key in LOSSES:
            if key in row:
                assert math.isfinite(row[key]), (row["step"], key)
    # step 0 trains both discriminators; the generator and classifier learn every step
    assert {"loss_d_face", "loss_d_expression"} <= set(history[0])
    assert all({"loss_g", "loss_classifier", "loss_g_perceptual"} <= set(r) for r in history)
    assert (run / "losses.png").exists()


def test_checkpoint_resumes(run: Path) -> None:
    history = json.loads((run / "history.json").read_text())
    # rows every 2 steps and at each epoch's end (3, 6); the resumed run continues at 5; the
    # window that step 7 opened is in the checkpoint, not yet a row
    assert [r["step"] for r in history] == [2, 3, 4, 6]
    assert [r["step"] for r in history if "val_acc" in r] == [3, 6]
    state = checkpoint.load(run / checkpoint.LAST)
    assert state["step"] == 7 and state["identities"] == [f"syn{i:05d}" for i in range(6)]
    assert state["config"]["batch_size"] == 8 and state["config"]["net_kwargs"]["fc"] == 16
    for key in ("face_discriminator", "expression_discriminator", "optimizer_face_discriminator"):
        assert key in state
    # 6 identities + the "fake" class
    assert state["face_discriminator"]["head.net.7.weight"].shape[0] == 7
    assert (run / checkpoint.BEST).exists()


def test_sample_grid(run: Path) -> None:
    grid = Image.open(run / "samples_000007.png")
    # 8 fixed pairs as rows; face | expression | fake | 2 reconstructions, at 2x
    assert grid.size == (5 * 48 * 2, 8 * 48 * 2)
    assert (run / "samples_000002.png").exists() and (run / "samples_000004.png").exists()


def test_exported_archive_transfers_and_classifies(run: Path, tmp_path: Path) -> None:
    mar = export(run / checkpoint.LAST, "tdgan", "0.0-test", tmp_path / "store")
    loaded = open_archive(mar, tmp_path / "cache")
    meta = loaded.metadata
    assert meta.kind == "transfer" and meta.classes == list(CLASSES)
    assert meta.input.size == 48 and meta.input.channels == 1 and meta.input.framing == "fer2013"
    extra = meta.model_extra or {}
    assert extra["inputs"] == ["face", "expression"] and extra["classify"] == "expression"

    def png(seed: int) -> str:
        pixels = np.random.default_rng(seed).integers(0, 256, (48, 48), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="PNG")
        return base64.b64encode(buf.getvalue()).decode("ascii")

    body = json.dumps({"face": png(1), "expression": png(2)}).encode()
    rows = loaded.handler.handle([{"body": body}, {"body": body}], loaded.context)
    assert len(rows) == 2
    answer = Generation.model_validate(rows[0])
    image = Image.open(io.BytesIO(answer.image))
    assert image.format == "PNG" and image.size == (48, 48) and image.mode == "L"
    assert answer.probabilities is not None and list(answer.probabilities) == list(CLASSES)
    assert sum(answer.probabilities.values()) == pytest.approx(1.0)
    # the expression branch reads only the expression crop: the same for both rows
    assert rows[1]["probabilities"] == pytest.approx(rows[0]["probabilities"])


def test_build_takes_archive_kwargs() -> None:
    net = build(**{**TINY, "widths": [4, 8, 8], "up_widths": [8, 8, 4], "input_size": 48})
    assert net.classify(torch.rand(1, 1, 48, 48)).shape == (1, 7)


def test_cli(tmp_path: Path, sets: tuple[FaceSet, FaceSet], capsys: pytest.CaptureFixture) -> None:
    faces, expressions = sets
    write_ckplus_npz(tmp_path / "ckplus.npz", faces)
    np.savez(tmp_path / "fer.npz", images=expressions.images, labels=expressions.labels)
    out = tmp_path / "run"
    argv = ["tdgan", "--ckplus", str(tmp_path / "ckplus.npz"), "--fer2013"]
    argv += [str(tmp_path / "fer.npz"), "--out", str(out), "--widths", "4", "8", "8"]
    argv += ["--batch-size", "4", "--max-steps", "2", "--holdout-folds", "0", "--quiet"]
    argv += ["--d-expression-every", "1", "--expression-fake-class", "--critic-augment"]
    argv += ["--lambda-expression", "0.4", "--critic-warmup", "1"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    # fold 0 holds subjects 0 and 3: 4 of 6 subjects stay, and their peaks join FER2013
    assert "of 4 CK+ subjects" in printed and "28 FER2013 + " in printed
    state = checkpoint.load(out / checkpoint.LAST)
    assert state["step"] == 2 and len(state["identities"]) == 4
    assert state["metadata"]["net"]["kwargs"]["widths"] == [4, 8, 8]
    assert state["config"]["d_expression_every"] == 1 and state["config"]["d_face_every"] == 5
    assert state["config"]["expression_fake_class"] is True
    assert state["config"]["critic_augment"] is True
    assert state["config"]["lambda_expression"] == 0.4 and state["config"]["critic_warmup"] == 1
    # transfer-quality reads the 8-class critic the run trained
    probabilities = load_critic(out / checkpoint.LAST)(expressions.images[:3])
    assert probabilities.shape == (3, 8) and np.allclose(probabilities.sum(1), 1, atol=1e-5)


def test_expression_critic_with_a_fake_class_learns_to_reject_generated_faces(
    sets: tuple[FaceSet, FaceSet],
) -> None:
    """With `expression_fake_class` the expression discriminator has an 8th class and
    learns it on generated faces: after 12 of its updates on real expression images and
    the generator's faces (the generator held still: in a run it learns to fool the
    critic, and the two oscillate) it gives those faces far more of that class than the
    real images. Without the option it has no such class. Dropout is off in the critic
    and the rate high, so that 12 updates suffice."""
    faces, expressions = sets
    ctx = Context(RunOptions(device="cpu", progress=False), seed=0)
    cfg = TdganConfig(batch_size=8, lr=1e-2, net_kwargs=dict(TINY))
    assert TdganMethod(cfg, faces, expressions, ctx).d_expression.head.net[-1].out_features == 7
    cfg.expression_fake_class = True
    method = TdganMethod(cfg, faces, expressions, ctx)
    method.d_expression.eval()
    real = to_float(expressions.images[:8])
    label = torch.from_numpy(expressions.labels[:8])
    with torch.no_grad():
        fake = method.model.generate(to_float(faces.images[:8]), real)
    for _ in range(12):
        method.update_critic(real, label, fake)
    with torch.inference_mode():
        p_fake, p_real = (
            torch.softmax(method.d_expression(x)[1], 1)[:, len(CLASSES)].mean()
            for x in (fake, real)
        )
    assert p_fake > p_real + 0.5, (float(p_fake), float(p_real))


@pytest.mark.parametrize("critic_augment", [False, True])
def test_critic_augment_changes_every_image_the_expression_critic_sees(
    sets: tuple[FaceSet, FaceSet], critic_augment: bool
) -> None:
    """With `critic_augment` none of the three batches the expression discriminator reads
    in a step (real expressions, the detached fakes for its fake class, the fakes of the
    generator's loss) is the image itself; the generator's loss still reaches the
    generator through the augmentation. Without it, the critic reads the images as they are."""
    faces, expressions = sets
    ctx = Context(RunOptions(device="cpu", progress=False), seed=0)
    cfg = TdganConfig(batch_size=8, d_expression_every=1, net_kwargs=dict(TINY))
    cfg.expression_fake_class, cfg.critic_augment = True, critic_augment
    method = TdganMethod(cfg, faces, expressions, ctx)
    seen: list[torch.Tensor] = []
    made: list[torch.Tensor] = []
    method.d_expression.register_forward_pre_hook(lambda _, args: seen.append(args[0].detach()))
    method.model.decoder.register_forward_hook(lambda *a: made.append(a[2].detach().float()))
    face = to_float(faces.images[:8])
    expression = to_float(expressions.images[:8])
    identity = torch.zeros(8, dtype=torch.long)
    label = torch.from_numpy(expressions.labels[:8])
    decoder = {"decoder": method.model.decoder}
    before = snapshot(decoder)
    losses = method.train_step(0, face, identity, expression, label)
    assert torch.isfinite(losses["loss_g_expression"])
    assert changed(decoder, before) == {"decoder"}
    fake = made[0]
    assert len(seen) == 3 and all(x.shape == fake.shape for x in seen)
    as_they_are = [torch.equal(x, y) for x, y in zip(seen, (expression, fake, fake), strict=True)]
    assert as_they_are == [not critic_augment] * 3
    view = method.critic_view(fake.requires_grad_())
    view.sum().backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0
    assert float(view.detach().min()) >= 0 and float(view.detach().max()) <= 1


def test_critic_warmup_trains_only_the_expression_critic_first(
    sets: tuple[FaceSet, FaceSet],
) -> None:
    """During `critic_warmup` steps only the expression discriminator learns (the
    generator, the face discriminator and the classifier head stay as they are); the step
    after it trains the rest on their schedules."""
    faces, expressions = sets
    ctx = Context(RunOptions(device="cpu", progress=False), seed=0)
    cfg = TdganConfig(batch_size=8, critic_warmup=2, net_kwargs=dict(TINY))
    method = TdganMethod(cfg, faces, expressions, ctx)
    nets = {"generator": method.model, "face": method.d_face, "critic": method.d_expression}
    for step in range(2):
        before = snapshot(nets)
        assert set(method.step(step, step)) == {"loss_d_expression"}
        assert changed(nets, before) == {"critic"}
    before = snapshot(nets)
    assert "loss_g" in method.step(5, 5)
    assert changed(nets, before) == {"generator", "face"}  # D_face learns every 5th, D_expr 10th


def test_resume_is_exact(tmp_path: Path, sets: tuple[FaceSet, FaceSet]) -> None:
    """Stopped after 2 steps and resumed, a run ends where an unbroken one does: every
    random draw (batches, augmentation, noise, dropout) continues where it stopped."""
    faces, expressions = sets

    def train(out: Path, resume: bool, max_steps: int) -> dict[str, object]:
        opts = RunOptions(device="cpu", max_steps=max_steps, progress=False, export=False)
        cfg = TdganConfig(epochs=2, batch_size=8, net_kwargs=dict(TINY))
        return train_tdgan(cfg, faces, expressions, out, resume=resume, opts=opts)

    train(tmp_path / "whole", False, 5)
    train(tmp_path / "parts", False, 2)
    train(tmp_path / "parts", True, 3)
    whole = checkpoint.load(tmp_path / "whole" / checkpoint.LAST)
    parts = checkpoint.load(tmp_path / "parts" / checkpoint.LAST)
    assert whole["step"] == parts["step"] == 5
    for key in ("model", "face_discriminator", "expression_discriminator"):
        assert all(torch.equal(whole[key][k], parts[key][k]) for k in whole[key]), key
