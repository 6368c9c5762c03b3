"""DeRL: network shapes, stage 1 learning, stage 2 on a frozen generator, the served
neutral face. Tiny networks on synthetic same-person pairs; a few seconds in all."""

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
from training.data.augment import AugmentConfig
from training.data.samples import FaceSet
from training.data.synthetic import make_dataset, make_pairs
from training.export import export
from training.nets.derl import DeRL, Discriminator, Generator, LocalCNN
from training.train import checkpoint
from training.train.classifier import ClassifierConfig, train_classifier
from training.train.derl_gan import GanConfig, de_expression_quality, train_gan
from training.train.loop import RunOptions

TINY = {"widths": (8, 8, 16, 16), "code": 16}

#: float32, as these tiny runs were tuned in (bfloat16 is the default only where native).
QUIET = RunOptions(device="cpu", precision="fp32", progress=False)


@pytest.fixture(scope="module")
def synthetic_pairs() -> tuple[FaceSet, np.ndarray]:
    """Expressive rows then their neutral rows in one set, with (expressive, neutral) pairs."""
    faces, neutrals = make_pairs(64, identities=12, seed=3)
    both = FaceSet(
        np.concatenate([faces.images, neutrals.images]),
        np.concatenate([faces.labels, neutrals.labels]),
    )
    n = len(faces)
    return both, np.stack([np.arange(n), np.arange(n) + n], 1)


@pytest.fixture(scope="module")
def gan_run(tmp_path_factory: pytest.TempPathFactory, synthetic_pairs) -> Path:
    data, pairs = synthetic_pairs
    out = tmp_path_factory.mktemp("gan")
    train_gan(
        GanConfig(epochs=6, batch_size=16, lr=1e-3, widths=TINY["widths"], code=TINY["code"]),
        data,
        pairs,
        out,
        opts=QUIET,
    )
    return out


@pytest.mark.parametrize("size", [48, 64])
def test_network_shapes(size: int) -> None:
    x = torch.randn(3, 1, size, size)
    g = Generator(size, 1, TINY["widths"], TINY["code"])
    neutral, pairs, code = g.forward_features(x)
    assert neutral.shape == x.shape and neutral.abs().max() <= 1
    # one encoder and one decoder layer of each of the 4 sizes, concatenated on channels
    assert [p.shape[-1] for p in pairs] == [size // 2, size // 4, size // 8, size // 16]
    assert [p.shape[1] for p in pairs] == [2 * w for w in TINY["widths"]]
    assert code.shape == (3, TINY["code"])
    assert Discriminator(1)(x, neutral).shape[:2] == (3, 1)
    feats, logits = LocalCNN(16, size // 2, 7, 8, 32)(pairs[0])
    assert feats.shape == (3, 32) and logits.shape == (3, 7)
    final, local_logits, out = DeRL(7, size, 1, TINY["widths"], TINY["code"], 8, 32).forward_all(x)
    assert final.shape == (3, 7) and len(local_logits) == 4 and out.shape == x.shape
    deeper = DeRL(7, size, 1, TINY["widths"], TINY["code"], 8, 32, local_convs=2)
    assert deeper(x).shape == (3, 7)
    convs = [sum(isinstance(m, torch.nn.Conv2d) for m in c.modules()) for c in deeper.locals]
    # two convs per pooling stage while the map is larger than 3x3, then one more
    stages = {48: [3, 2, 1, 0], 64: [4, 3, 2, 1]}[size]  # maps 24/12/6/3 and 32/16/8/4
    assert convs == [2 * s + 1 for s in stages]
    grown = DeRL(7, size, 1, TINY["widths"], TINY["code"], 8, 32, local_convs=2, local_growth=2)
    assert grown(x).shape == (3, 7)
    # VGG-style: the channels double after every pooling (8 -> 16 -> 32 ...)
    outs = [m.out_channels for m in grown.locals[0].modules() if isinstance(m, torch.nn.Conv2d)]
    assert outs == [8 * 2 ** (i // 2) for i in range(2 * stages[0] + 1)]


def test_input_size_must_divide_by_16() -> None:
    with pytest.raises(ValueError):
        Generator(40)


def test_gan_learns_to_remove_expression(gan_run: Path, synthetic_pairs) -> None:
    history = json.loads((gan_run / "history.json").read_text())
    assert history[-1]["loss_g_l1"] < 0.8 * history[0]["loss_g_l1"]
    assert (gan_run / "samples_000024.png").exists()  # 6 epochs of 64 / 16 steps
    state = checkpoint.load(gan_run / checkpoint.LAST)
    gen = Generator(**state["generator"])
    gen.load_state_dict(state["model"])
    data, pairs = synthetic_pairs
    q = de_expression_quality(gen, data, pairs[:16])
    assert set(q) >= {"l1", "l1_identity", "ssim", "ssim_identity"}
    assert 0 < q["l1"] < 1 and -1 <= q["ssim"] <= 1


def test_gan_resumes(tmp_path: Path, synthetic_pairs) -> None:
    data, pairs = synthetic_pairs
    cfg = GanConfig(epochs=1, batch_size=32, widths=TINY["widths"], code=TINY["code"])
    train_gan(cfg, data, pairs[:64], tmp_path, opts=QUIET)
    cfg.epochs = 2
    result = train_gan(cfg, data, pairs[:64], tmp_path, resume=True, opts=QUIET)
    assert [h["epoch"] for h in result["history"]] == [1, 2]


@pytest.fixture(scope="module")
def stage2(gan_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, FaceSet, Path]:
    """Stage 2 on the tiny stage-1 generator: (best summary, validation set, run dir)."""
    out = tmp_path_factory.mktemp("derl")
    train = make_dataset(560, identities=range(0, 20), seed=1)
    val = make_dataset(140, identities=range(100, 110), seed=2)
    cfg = ClassifierConfig(
        net="derl",
        net_kwargs={**TINY, "local_width": 16, "local_fc": 32, "dropout": 0.0},
        epochs=8,
        batch_size=32,
        lr=0.05,
        warmup_epochs=1,
        # Frozen features of a seconds-old generator: learnable without augmentation in a
        # few epochs, not with it.
        augment=AugmentConfig(max_shift=0, max_rotation_deg=0, max_scale=0, p_illumination=0),
        label_smoothing=0.0,
        mean=0.5,
        std=0.5,
        generator=str(gan_run / checkpoint.LAST),
    )
    return train_classifier(cfg, train, val, out, opts=QUIET), val, out


def test_stage2_learns_on_frozen_generator(gan_run: Path, stage2) -> None:
    best, _, out = stage2
    # A tiny frozen generator trained for seconds: well above chance (1/7) is the claim here;
    # real accuracy is `fer-train evaluate`'s job.
    assert best["accuracy"] > 2 / 7
    g_before = checkpoint.load(gan_run / checkpoint.LAST)["model"]
    g_after = {
        k[len("generator.") :]: v
        for k, v in checkpoint.load(out / checkpoint.LAST)["model"].items()
        if k.startswith("generator.")
    }
    assert g_after.keys() == g_before.keys()
    assert all(torch.equal(g_before[k], g_after[k]) for k in g_before)  # frozen, BN stats too


def test_served_neutral_face(stage2, tmp_path: Path) -> None:
    _, val, out = stage2
    mar = export(out / checkpoint.BEST, "derl", "0.1", tmp_path / "store", fp16=True)
    loaded = open_archive(mar, tmp_path / "cache")
    assert loaded.metadata.kind == "derl"
    buf = io.BytesIO()
    Image.fromarray(val.images[0]).save(buf, format="PNG")
    body = json.dumps({"image": base64.b64encode(buf.getvalue()).decode(), "neutral": True})
    with_face, plain = loaded.handler.handle(
        [{"body": body.encode()}, {"body": buf.getvalue()}], loaded.context
    )
    assert "neutral" not in plain
    assert with_face["probabilities"] == pytest.approx(plain["probabilities"], abs=1e-6)
    neutral = Image.open(io.BytesIO(base64.b64decode(with_face["neutral"])))
    assert neutral.size == (48, 48) and neutral.mode == "L"


def test_stage2_flags_reach_the_run() -> None:
    """`fer-train derl` takes the local CNN sizes, distillation and `--init` (fine-tuning)."""
    from training.__main__ import derl_config, parser

    args = parser().parse_args(
        ["derl", "--data", "t.npz", "--val", "v.npz", "--generator", "g.pt", "--out", "o"]
        + ["--local-width", "96", "--local-convs", "2", "--local-growth", "2"]
        + ["--init", "derl.mar"]
        + ["--distill", "compact.mar", "--distill-weight", "0.7", "--distill-temperature", "3"]
    )
    cfg = derl_config(args)  # what the run is built from, not just what argparse read
    assert cfg.net == "derl" and cfg.generator == "g.pt" and cfg.init == "derl.mar"
    assert cfg.net_kwargs == {"local_width": 96, "local_convs": 2, "local_growth": 2}
    assert (cfg.distill, cfg.distill_weight, cfg.distill_temperature) == ("compact.mar", 0.7, 3)


def test_generator_pre_trains_by_reconstruction(tmp_path: Path) -> None:
    """A set without pairs (FER2013) pre-trains the generator with every face its own
    target (`fer-train derl-gan --reconstruct`), and a later run starts from it (`--init`)."""
    from training.__main__ import main
    from training.train.derl_gan import generator_weights, self_pairs

    faces = make_dataset(96, identities=12, seed=4)
    assert self_pairs(3).tolist() == [[0, 0], [1, 1], [2, 2]]
    cfg = GanConfig(epochs=6, batch_size=16, lr=1e-3, widths=TINY["widths"], code=TINY["code"])
    first = train_gan(cfg, faces, self_pairs(len(faces)), tmp_path / "pre", opts=QUIET)
    l1 = [h["loss_g_l1"] for h in first["history"]]
    assert l1[-1] < 0.8 * l1[0]  # it learns to reconstruct
    pre = checkpoint.load(tmp_path / "pre" / checkpoint.LAST)

    cfg.epochs, cfg.init = 1, str(tmp_path / "pre" / checkpoint.LAST)
    cfg.lr = 1e-9  # so the continued generator stays where it started
    train_gan(cfg, faces, self_pairs(len(faces)), tmp_path / "more", opts=QUIET)
    more = generator_weights(tmp_path / "more" / checkpoint.LAST)
    for k, v in pre["model"].items():
        if v.is_floating_point() and "running" not in k:
            assert torch.allclose(more[k], v, atol=1e-5), k

    np.savez(tmp_path / "fer.npz", images=faces.images, labels=faces.labels)
    out = tmp_path / "cli"
    assert (
        main(
            ["derl-gan", "--reconstruct", "--data", str(tmp_path / "fer.npz")]
            + ["--out", str(out), "--max-steps", "2", "--quiet", "--device", "cpu"]
        )
        == 0
    )
    cli = checkpoint.load(out / checkpoint.LAST)
    assert cli["config"]["targets"] == "self" and cli["step"] == 2


def test_ckplus_cv_fine_tunes_a_pretrained_derl(stage2, tmp_path: Path) -> None:
    """`fer-train derl-cv --pretrained`: every fold starts from the pre-trained DeRL; with
    no stage-1 epochs its generator stays the pre-trained one, with them the fold's
    generator starts from it and replaces it in stage 2."""
    from training.data import ckplus
    from training.data.synthetic import write_ckplus_npz
    from training.train.derl_cv import CvConfig, run_cv

    _, _, pre_dir = stage2
    pretrained = pre_dir / checkpoint.LAST
    pre = checkpoint.load(pretrained)["model"]
    write_ckplus_npz(tmp_path / "ck.npz", make_dataset(72, identities=12, seed=5))
    data = ckplus.load_ckplus(tmp_path / "ck.npz")

    with pytest.raises(ValueError, match="gan_epochs"):
        run_cv(CvConfig(folds=(0,), gan_epochs=0), data, tmp_path / "none", QUIET)

    # lr ~0: what each fold's stage 2 ends with is what it started from.
    cfg = CvConfig(
        folds=(0, 1), gan_epochs=0, epochs=1, batch_size=16, lr=1e-9, pretrained=str(pretrained)
    )
    s = run_cv(cfg, data, tmp_path / "cv", QUIET)
    assert s["stopped"] == "done" and [f["fold"] for f in s["folds"]] == [0, 1]
    assert s["config"]["pretrained"] == str(pretrained) and "pretrained_config" in s
    assert not (tmp_path / "cv" / "fold0" / "gan").exists()
    for k in (0, 1):
        fold = checkpoint.load(tmp_path / "cv" / f"fold{k}" / "derl" / checkpoint.LAST)["model"]
        assert fold.keys() == pre.keys()
        for name, v in pre.items():
            if name.startswith("generator."):
                assert torch.equal(fold[name], v), name  # frozen pre-trained generator
            elif v.is_floating_point() and "running" not in name:
                assert torch.allclose(fold[name], v, atol=1e-4), name  # started from it

    cfg = CvConfig(
        folds=(0,), gan_epochs=1, epochs=1, batch_size=16, lr=1e-9, pretrained=str(pretrained)
    )
    run_cv(cfg, data, tmp_path / "cv_gan", QUIET)
    fold_dir = tmp_path / "cv_gan" / "fold0"
    gan = checkpoint.load(fold_dir / "gan" / checkpoint.LAST)
    assert gan["config"]["init"] == str(pretrained)
    fold = checkpoint.load(fold_dir / "derl" / checkpoint.LAST)["model"]
    for name, v in gan["model"].items():  # stage 2 reads the fold's generator, not init's
        assert torch.equal(fold["generator." + name], v), name
    assert any(
        not torch.equal(gan["model"][k], pre["generator." + k])
        for k in gan["model"]
        if gan["model"][k].is_floating_point()
    )
