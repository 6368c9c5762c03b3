"""Synthetic faces: deterministic, one person across expressions and yaws, expressions that
differ where they should, yaw that turns the face, and the data-set builders."""

from __future__ import annotations

import numpy as np
import pytest

from training.data import synthetic
from training.data.samples import CLASSES
from training.data.synthetic import (
    EXPRESSIONS,
    Expression,
    Identity,
    Scene,
    make_dataset,
    make_multi_yaw,
    make_pairs,
    render,
)

NEUTRAL = CLASSES.index("neutral")


def mad(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference in grey levels."""
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


def test_render_is_deterministic_and_sized() -> None:
    a = render(3, "happy", yaw=20, size=48, rng=np.random.default_rng(5))
    b = render(3, "happy", yaw=20, size=48, rng=np.random.default_rng(5))
    assert a.shape == (48, 48) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, render(3, "happy", yaw=20, size=48, rng=np.random.default_rng(6)))
    assert render(3, size=64).shape == (64, 64)
    assert np.array_equal(render(Identity.sample(3)), render(3))
    assert a.std() > 10  # a picture, not a flat field


def test_identities_are_fixed_by_id_and_differ() -> None:
    assert Identity.sample(7) == Identity.sample(7)
    assert Identity.sample(7) != Identity.sample(8)
    people = [render(i) for i in range(6)]
    gaps = [mad(people[i], people[j]) for i in range(6) for j in range(i + 1, 6)]
    assert min(gaps) > 3


def test_every_expression_changes_the_face_visibly() -> None:
    for person in range(4):
        faces = [render(person, c) for c in range(len(CLASSES))]
        for i in range(len(faces)):
            for j in range(i + 1, len(faces)):
                assert mad(faces[i], faces[j]) > 0.4, (person, CLASSES[i], CLASSES[j])
    assert tuple(EXPRESSIONS) == CLASSES
    assert render(0, Expression()).tolist() == render(0, "neutral").tolist()
    assert np.array_equal(render(0, "sad", intensity=0.0), render(0, NEUTRAL))
    with pytest.raises(ValueError):
        render(0, "contempt")


def test_expressions_move_the_right_parts() -> None:
    for person in (0, 5, 9, 11):
        who = Identity.sample(person)
        neutral = render(who, NEUTRAL).astype(np.float64)
        brow_y = who.eye_y - who.brow_gap
        mouth_y = who.eye_y + who.nose_length + who.mouth_gap
        brows = slice(int(48 * (brow_y - 0.05)), int(48 * (brow_y + 0.03)))
        mouth = slice(int(48 * (mouth_y - 0.05)), int(48 * (mouth_y + 0.06)))
        change = {
            name: np.abs(render(who, name).astype(np.float64) - neutral)
            for name in ("happy", "angry", "sad", "fear", "surprise")
        }
        smile_brows = change["happy"][brows].sum()
        assert change["happy"][mouth].sum() > 2 * smile_brows, person  # a smile: the mouth
        for name in ("angry", "sad", "fear", "surprise"):  # these move the brows
            assert change[name][brows].sum() > 1.5 * smile_brows, (person, name)


def test_yaw_turns_the_face_and_mirrors() -> None:
    who = Identity.sample(2)

    def expression_centre(yaw: float) -> float:
        """Column centroid of what a smile changes: the mouth, wherever the turn put it."""
        diff = np.abs(render(who, "happy", yaw=yaw).astype(np.float64) - render(who, yaw=yaw))
        return float((diff.sum(0) * np.arange(48)).sum() / diff.sum())

    centres = [expression_centre(y) for y in (-40, -20, 0, 20, 40)]
    assert np.all(np.diff(centres) > 2), centres  # + yaw turns towards the image's right
    assert abs(centres[2] - 23.5) < 1.5
    left, right = render(who, NEUTRAL, yaw=-30), render(who, NEUTRAL, yaw=30)
    # Turning left is turning right in a mirror (up to the hair's strands).
    assert mad(left[:, ::-1], right) < 0.35 * mad(left, right)
    frontal = render(who, NEUTRAL)
    assert mad(render(who, NEUTRAL, yaw=5), frontal) < mad(render(who, NEUTRAL, yaw=45), frontal)


def test_scene_changes_capture_not_person() -> None:
    rng = np.random.default_rng(0)
    scene = Scene.sample(rng)
    assert scene == Scene.sample(np.random.default_rng(0))
    a = render(4, "fear", rng=np.random.default_rng(1), scene=scene)
    b = render(4, "fear", rng=np.random.default_rng(2), scene=scene)
    c = render(4, "fear", rng=np.random.default_rng(3))
    assert 0 < mad(a, b) < 5 < mad(a, c)  # same scene: only pixel noise differs


def test_make_dataset_is_balanced_deterministic_and_prefix_stable() -> None:
    data = make_dataset(21, size=32, seed=4, identities=5, yaw_range=(-30, 30))
    assert data.images.shape == (21, 32, 32)
    assert data.class_counts().tolist() == [3] * 7
    assert set(data.meta["identity"]) <= set(range(5))
    assert data.meta["subject"][0] == f"syn{data.meta['identity'][0]:05d}"
    assert np.array_equal(data.meta["neutral"], data.labels == NEUTRAL)
    assert (np.abs(data.meta["yaw"]) <= 30).all() and data.meta["yaw"].std() > 5
    again = make_dataset(21, size=32, seed=4, identities=5, yaw_range=(-30, 30))
    assert np.array_equal(data.images, again.images)
    prefix = make_dataset(7, size=32, seed=4, identities=5, yaw_range=(-30, 30))
    assert np.array_equal(prefix.images, data.images[:7])
    other = make_dataset(7, size=32, seed=5, identities=5)
    assert not np.array_equal(other.images, prefix.images)
    held_out = make_dataset(14, size=32, identities=[100, 101], classes=[3, 6])
    assert set(held_out.meta["identity"]) <= {100, 101} and set(held_out.labels) == {3, 6}


def test_make_pairs_shares_person_scene_and_pose() -> None:
    faces, neutrals = make_pairs(12, size=32, seed=1, identities=4, yaw_range=(-20, 20))
    assert faces.images.shape == neutrals.images.shape == (12, 32, 32)
    assert NEUTRAL not in faces.labels.tolist()
    assert sorted(set(faces.labels.tolist())) == [c for c in range(7) if c != NEUTRAL]
    assert (neutrals.labels == NEUTRAL).all() and neutrals.meta["neutral"].all()
    for key in ("identity", "yaw", "pair"):
        assert np.array_equal(faces.meta[key], neutrals.meta[key])
    own = [mad(faces.images[i], neutrals.images[i]) for i in range(12)]
    others = [mad(faces.images[i], neutrals.images[(i + 1) % 12]) for i in range(12)]
    assert np.mean(own) < 0.5 * np.mean(others)
    assert min(own) > 0.3  # but the expression did change the face


def test_make_multi_yaw_groups_one_face_over_yaws() -> None:
    yaws = (-45, 0, 45)
    data = make_multi_yaw(4, yaws=yaws, size=32, seed=2, identities=3)
    assert len(data) == 12
    assert data.meta["yaw"].tolist() == list(yaws) * 4
    assert data.meta["group"].tolist() == [g for g in range(4) for _ in yaws]
    for g in range(4):
        rows = np.flatnonzero(data.meta["group"] == g)
        assert len(set(data.labels[rows])) == 1 and len(set(data.meta["identity"][rows])) == 1
        assert (data.meta["frontal_index"][rows] == rows[1]).all()
        assert data.meta["yaw"][rows[1]] == 0
        assert mad(data.images[rows[0]], data.images[rows[2]]) > 3
    no_frontal = make_multi_yaw(1, yaws=(-30, 30), size=32)
    assert (no_frontal.meta["frontal_index"] == -1).all()


def test_identity_count_must_be_positive() -> None:
    with pytest.raises(ValueError):
        make_dataset(3, identities=[])
    assert synthetic.DEFAULT_YAWS[len(synthetic.DEFAULT_YAWS) // 2] == 0
