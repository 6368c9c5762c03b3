"""The transfer-quality figures and the identity embedding that judges them.

Two transfers whose answers are known bound every figure: copying the expression image
(the requested expression, someone else's face) and copying the face image (the right
person, no expression change). The figures must tell them apart, in opposite directions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from training.data.augment import PRESETS
from training.data.samples import FaceSet
from training.data.synthetic import make_dataset
from training.evaluate import load_handler
from training.train.classifier import ClassifierConfig, train_classifier
from training.train.identity import Embedder, IdentityConfig, identification, train_identity
from training.train.loop import RunOptions
from training.transfer_quality import load_critic, transfer_quality

SIZE = 32
QUIET = RunOptions(device="cpu", threads=1, progress=False)


@pytest.fixture(scope="module")
def judged(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """An identity embedding trained on 12 people, an expression judge trained on 40 other
    people, and faces and expressions of people neither saw."""
    tmp = tmp_path_factory.mktemp("quality")
    people = make_dataset(480, size=SIZE, seed=3, identities=range(12), intensity_range=(0.8, 1))
    train_identity(
        IdentityConfig(epochs=12, batch_size=32, widths=(8, 16), fc=32),
        people,
        tmp / "identity",
        opts=QUIET,
    )
    strong = (0.9, 1.0)  # clear expressions, as in the classifier-training tests
    expressions = make_dataset(
        840, size=SIZE, seed=1, identities=range(100, 140), intensity_range=strong
    )
    held = make_dataset(140, size=SIZE, seed=2, identities=range(200, 210), intensity_range=strong)
    train_classifier(
        ClassifierConfig(
            net_kwargs={"widths": (8, 16), "kernels": (3, 3), "fc": 32, "dropout": 0.0},
            epochs=8,
            batch_size=16,
            lr=0.02,
            warmup_epochs=1,
            augment=PRESETS["flip-only"],
        ),
        expressions,
        held,
        tmp / "judge",
        opts=QUIET,
    )
    return {
        "embed": Embedder.load(tmp / "identity" / "identity.pt"),
        "judge": load_handler(tmp / "judge" / "best.pt").predict_arrays,
        "faces": make_dataset(120, size=SIZE, seed=4, identities=range(300, 306)),
        "expressions": make_dataset(
            140, size=SIZE, seed=5, identities=range(400, 440), intensity_range=strong
        ),
    }


def copy_expression(face: torch.Tensor, expression: torch.Tensor) -> torch.Tensor:
    return expression.clone()


def copy_face(face: torch.Tensor, expression: torch.Tensor) -> torch.Tensor:
    return face.clone()


def test_identity_embedding_tells_unseen_people_apart(judged: dict[str, Any]) -> None:
    figures = identification(judged["embed"], judged["faces"])
    assert figures["subjects"] == 6 and figures["n"] == 120
    assert figures["rank1"] > 3 * figures["chance"]
    assert figures["similarity_own"] > figures["similarity_others"]


def test_figures_separate_copying_the_face_from_copying_the_expression(
    judged: dict[str, Any],
) -> None:
    args = (judged["judge"], judged["embed"], judged["faces"], judged["expressions"])
    expr = transfer_quality(copy_expression, *args, pairs=200, seed=0)
    face = transfer_quality(copy_face, *args, pairs=200, seed=0)

    e = expr["expression"]
    assert e["generated"]["accuracy"] == e["reference_expression_images"]["accuracy"]
    assert e["generated"]["accuracy"] > 0.6  # the judge reads these people's expressions
    f = face["expression"]
    assert f["generated"]["accuracy"] == f["baseline_unchanged_face"]["accuracy"]
    assert e["generated"]["accuracy"] > f["generated"]["accuracy"] + 0.2

    ei, fi = expr["identity"], face["identity"]
    assert fi["similarity_to_own_face_input"] == pytest.approx(1.0, abs=1e-5)
    assert fi["closer_to_own_than_to_mean_other"] == 1.0
    assert fi["gallery"]["rank1"] > 0.8
    assert ei["gallery"]["rank1"] < 0.5  # someone else's face: its subject is a guess
    assert ei["similarity_to_own_face_input"] < fi["similarity_to_own_face_input"]

    r = face["reconstruction"]
    assert r["face_l1"] == 0.0 and r["expression_l1"] == 0.0
    assert r["face_ssim"] == pytest.approx(1.0, abs=1e-4)


def test_a_critic_is_scored_on_the_expression_images_and_on_the_generated_faces(
    judged: dict[str, Any],
) -> None:
    """With the judge as the critic, copying the expression image gives the critic the same
    hits on both; without a critic there is no such figure."""
    args = (judged["judge"], judged["embed"], judged["faces"], judged["expressions"])
    result = transfer_quality(copy_expression, *args, pairs=100, seed=0, critic=judged["judge"])
    critic, e = result["expression"]["critic"], result["expression"]
    assert critic["generated"] == critic["expression_images"]
    assert critic["expression_images"] == e["reference_expression_images"]
    copied_face = transfer_quality(copy_face, *args, pairs=100, seed=0, critic=judged["judge"])
    assert copied_face["expression"]["critic"]["generated"] == e["baseline_unchanged_face"]
    assert "critic" not in transfer_quality(copy_face, *args, pairs=100, seed=0)["expression"]


def test_identity_needs_two_people(judged: dict[str, Any]) -> None:
    faces: FaceSet = judged["faces"]
    one = faces.subset(faces.meta["subject"] == faces.meta["subject"][0])
    with pytest.raises(ValueError, match="two people"):
        transfer_quality(copy_face, judged["judge"], judged["embed"], one, judged["expressions"])


def test_fer_train_identity_and_transfer_quality_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """End to end on a CK+-shaped file, an untrained tiny TDGAN (the plumbing, not the
    figures) and the shipped compact archive as the judge."""
    from training.__main__ import main
    from training.nets.tdgan import TDGAN, Discriminator, discriminator_kwargs
    from training.train import checkpoint
    from training.train.tdgan import TdganConfig, metadata

    faces = make_dataset(120, size=48, seed=6, identities=range(500, 510))
    subjects = faces.meta["subject"]
    n = len(faces)
    np.savez(
        tmp_path / "ck.npz",
        images=faces.images,
        labels=np.zeros(n, np.int64),  # CK+ codes: all "neutral" here
        neutral_index=np.full(n, -1),
        subject=subjects,
        sequence=np.array([f"{s}_001" for s in subjects]),
        frame=np.zeros(n, np.int64),
        neutral=np.ones(n, bool),
        fold=np.searchsorted(np.unique(subjects), subjects) % 5,
        source=np.full(n, "CK+48"),
        labeled_sequence=np.zeros(n, bool),
    )
    expressions = make_dataset(70, size=48, seed=7, identities=range(600, 610))
    np.savez(tmp_path / "expr.npz", images=expressions.images, labels=expressions.labels)
    kwargs: dict[str, Any] = {
        "widths": (4, 8, 8),
        "embed": 8,
        "up_widths": (8, 8, 8),
        "noise": 4,
        "fc": 16,
    }
    model = TDGAN(**kwargs)
    critic = Discriminator(7, **discriminator_kwargs(kwargs))
    meta = metadata(TdganConfig(net_kwargs=kwargs), 48)
    state = {"model": model.state_dict(), "metadata": meta}
    checkpoint.save({**state, "expression_discriminator": critic.state_dict()}, tmp_path / "g.pt")

    identity = ["identity", "--data", str(tmp_path / "ck.npz"), "--out", str(tmp_path / "id")]
    identity += ["--epochs", "2", "--threads", "1", "--quiet", "--holdout-folds", "0", "1"]
    assert main(identity) == 0
    assert json.loads((tmp_path / "id" / "identification.json").read_text())["subjects"] == 4

    capsys.readouterr()
    store = Path(__file__).parents[2] / "model_store"
    quality = ["transfer-quality", "--model", str(tmp_path / "g.pt"), "--json"]
    quality += ["--judge", str(store / "compact.mar"), "--ckplus", str(tmp_path / "ck.npz")]
    quality += ["--identity", str(tmp_path / "id" / "identity.pt"), "--pairs", "50"]
    quality += ["--expressions", str(tmp_path / "expr.npz"), "--holdout-folds", "0", "1"]
    quality += ["--grid", str(tmp_path / "grid.png")]
    assert main(quality) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["pairs"] == 50
    assert result["identity"]["reference_real_images"]["subjects"] == 4
    assert 0.0 <= result["expression"]["generated"]["accuracy"] <= 1.0
    assert result["reconstruction"]["face_l1"] > 0.0  # an untrained generator does not copy
    # The checkpoint's expression discriminator, read the way the trainer reads it.
    critic.eval()
    with torch.inference_mode():
        probs = torch.softmax(critic(torch.from_numpy(expressions.images[:5, None]) / 255)[1], 1)
    assert np.allclose(load_critic(tmp_path / "g.pt")(expressions.images[:5]), probs, atol=1e-6)
    assert load_critic(store / "compact.mar") is None
    for read in ("expression_images", "generated"):
        assert 0.0 <= result["expression"]["critic"][read]["accuracy"] <= 1.0
    checkpoint.save(state, tmp_path / "generator_only.pt")
    assert load_critic(tmp_path / "generator_only.pt") is None
    # The matrix: a header row of one expression per class, then one row per held-out person
    # (4), each column 48 px, enlarged 2x.
    from PIL import Image

    grid = Image.open(tmp_path / "grid.png")
    assert grid.size == (2 * 48 * (1 + 7), 2 * 48 * (1 + 4))


def test_transfer_grid_shows_each_person_with_each_expression(judged: dict[str, Any]) -> None:
    from training.transfer_quality import transfer_grid

    faces, expressions = judged["faces"], judged["expressions"]
    columns = transfer_grid(copy_expression, faces, expressions, people=3, seed=1)
    assert len(columns) == 1 + 7 and all(c.shape == (4, SIZE, SIZE) for c in columns)
    assert (columns[0][0] == 255).all()  # the corner is blank
    picked = {bytes(c.tobytes()) for c in columns[0][1:]}
    rows = [i for i, im in enumerate(faces.images) if bytes(im.tobytes()) in picked]
    assert len({faces.meta["subject"][i] for i in rows}) == 3  # three different people
    for k, column in enumerate(columns[1:]):
        header = column[0]
        assert any(np.array_equal(header, im) for im in expressions.images[expressions.labels == k])
        assert all(np.array_equal(made, header) for made in column[1:])  # copy_expression
    columns = transfer_grid(copy_face, faces, expressions, people=3, seed=1)
    assert all(np.array_equal(columns[1][1:], c[1:]) for c in columns[1:])
    assert np.array_equal(columns[0][1:], columns[1][1:])  # copy_face: every row its face
