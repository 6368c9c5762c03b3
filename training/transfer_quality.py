"""Quality figures of an expression-transfer model on pairs it was not trained on.

Every figure is measured by a network that did not train with the GAN:

- expression: a classifier archive (`derl` or `compact`) reads the generated face; the hit
  rate against the expression image's label, beside two references: the same classifier on
  the expression images themselves (its ceiling here) and on the unchanged face inputs
  (what a transfer that does nothing would score);
- identity: an embedding trained only to tell CK+ training subjects apart
  (`training/train/identity.py`); the generated face is compared with the face inputs of
  all pairs: similarity to its own face input vs to other people's, and rank-1
  identification of its subject among the held-out subjects' mean embeddings (leave-one-
  out references on the real images come from `identity.identification`);
- reconstruction: TDGAN's dual-image consistency path, G(fake, face) against the face and
  G(expression, fake) against the expression image, L1 and SSIM in [0, 1] grey levels.

A training checkpoint also holds TDGAN's own expression discriminator, the generator's only
expression signal. It is not a judge (the generator learned to please it), but it tells why
a run fails: its accuracy on the real expression images, beside how often it reads the
generated faces as the requested expression (`critic`). A generated hit rate above its
accuracy on real images, with a low judge hit rate, means the generator fits the critic's
weaknesses rather than the expression.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.data.samples import CLASSES, FaceSet
from training.data.tensors import to_float, to_uint8
from training.metrics import ssim
from training.train.identity import identity_figures, subject_labels, subject_similarities

#: (face, expression) in [0, 1], [N,1,S,S] -> generated face in [0, 1], same shape.
Generate = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: uint8 [N,S,S] -> class probabilities [N, 7] (a loaded classifier handler's predict_arrays;
#: a critic with a "fake" class has an 8th column, which is never a hit)
Judge = Callable[[np.ndarray], np.ndarray]
#: uint8 [N,S,S] -> L2-normalised embeddings [N, D]
Embed = Callable[[np.ndarray], np.ndarray]


def load_generator(path: str | Path, seed: int = 0) -> Generate:
    """A TDGAN from a `fer-train tdgan` checkpoint or a `tdgan.mar`, as a `Generate`; the
    decoder's noise is drawn from a seeded generator, so figures are reproducible."""
    from training.nets.tdgan import TDGAN
    from training.train import checkpoint

    model = TDGAN(**checkpoint.net_kwargs(path))
    model.load_state_dict(checkpoint.load_weights(path))
    model.eval()
    noise_gen = torch.Generator().manual_seed(seed)

    @torch.inference_mode()
    def generate(face: torch.Tensor, expression: torch.Tensor) -> torch.Tensor:
        size = model.map_size
        noise = torch.rand(len(face), model.noise_channels, size, size, generator=noise_gen)
        return model.generate(face, expression, noise).float().clamp(0, 1)

    return generate


def load_critic(path: str | Path, batch_size: int = 512) -> Judge | None:
    """TDGAN's expression discriminator from a `fer-train tdgan` checkpoint, as a `Judge`;
    None for a `.mar` or a checkpoint without one (archives ship the generator only)."""
    from training.nets.tdgan import Discriminator, discriminator_kwargs
    from training.train import checkpoint

    path = Path(path)
    if path.suffix == ".mar":
        return None
    state = checkpoint.load(path)
    if "expression_discriminator" not in state:
        return None
    weights = state["expression_discriminator"]
    last = [v for k, v in weights.items() if k.startswith("head.") and k.endswith(".weight")][-1]
    classes = int(last.shape[0])  # 7, or 8 with a "fake" class
    kwargs = discriminator_kwargs(state["metadata"]["net"]["kwargs"])
    critic = Discriminator(classes, **kwargs)
    critic.load_state_dict(weights)
    critic.eval()

    @torch.inference_mode()
    def read(images: np.ndarray) -> np.ndarray:
        out = [
            torch.softmax(critic(to_float(images[i : i + batch_size]))[1].float(), 1).numpy()
            for i in range(0, len(images), batch_size)
        ]
        return np.concatenate(out) if out else np.zeros((0, classes), np.float32)

    return read


def _batched(generate: Generate, a: torch.Tensor, b: torch.Tensor, size: int) -> torch.Tensor:
    return torch.cat([generate(a[i : i + size], b[i : i + size]) for i in range(0, len(a), size)])


def _hits(judge: Judge, images: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    pred = judge(images).argmax(1)
    per_class = {
        c: float(np.mean(pred[labels == k] == k))
        for k, c in enumerate(CLASSES)
        if (labels == k).any()
    }
    return {"accuracy": float(np.mean(pred == labels)), "per_class": per_class}


def transfer_quality(
    generate: Generate,
    judge: Judge,
    embed: Embed,
    faces: FaceSet,
    expressions: FaceSet,
    pairs: int = 1000,
    seed: int = 0,
    batch_size: int = 256,
    critic: Judge | None = None,
) -> dict[str, Any]:
    """Figures on `pairs` random (face, expression) pairs: `faces` carry a `subject` column
    (at least two people), `expressions` carry labels; neither was used in training. With a
    `critic` (`load_critic`), `expression.critic` holds its hits on the expression images
    and on the generated faces."""
    if len(np.unique(faces.meta["subject"])) < 2:
        raise ValueError("identity figures need faces of at least two people")
    rng = np.random.default_rng(seed)
    fi = rng.integers(len(faces), size=pairs)
    ei = rng.integers(len(expressions), size=pairs)
    face, expression = to_float(faces.images[fi]), to_float(expressions.images[ei])
    requested = expressions.labels[ei]

    fake = _batched(generate, face, expression, batch_size)
    face_rec = _batched(generate, fake, face, batch_size)
    expression_rec = _batched(generate, expression, fake, batch_size)
    fake_u8 = to_uint8(fake)

    _, ids = subject_labels(faces)
    pair_ids = ids[fi]
    e_all = embed(faces.images)
    e_fake, e_face = embed(fake_u8), e_all[fi]
    cos = e_fake @ e_face.T  # [pairs, pairs]: output i against face input j
    other = pair_ids[None, :] != pair_ids[:, None]
    gallery = subject_similarities(e_fake, e_all, ids, leave_one_out=False)
    result: dict[str, Any] = {
        "pairs": pairs,
        "seed": seed,
        "expression": {
            "generated": _hits(judge, fake_u8, requested),
            "reference_expression_images": _hits(judge, expressions.images[ei], requested),
            "baseline_unchanged_face": _hits(judge, faces.images[fi], requested),
            "chance": 1.0 / len(CLASSES),
        },
        "identity": {
            "similarity_to_own_face_input": float(np.mean(np.diag(cos))),
            "similarity_to_other_peoples_faces": float(
                np.mean((cos * other).sum(1) / np.maximum(other.sum(1), 1))
            ),
            "closer_to_own_than_to_mean_other": float(
                np.mean(np.diag(cos) > (cos * other).sum(1) / np.maximum(other.sum(1), 1))
            ),
            "gallery": identity_figures(gallery, pair_ids),
        },
        "reconstruction": {
            "face_l1": float((face_rec - face).abs().mean()),
            "face_ssim": float(ssim(face_rec, face).mean()),
            "expression_l1": float((expression_rec - expression).abs().mean()),
            "expression_ssim": float(ssim(expression_rec, expression).mean()),
        },
    }
    if critic is not None:
        result["expression"]["critic"] = {
            "expression_images": _hits(critic, expressions.images[ei], requested),
            "generated": _hits(critic, fake_u8, requested),
        }
    return result


def transfer_grid(
    generate: Generate, faces: FaceSet, expressions: FaceSet, people: int = 6, seed: int = 0
) -> list[np.ndarray]:
    """A transfer matrix as `report.save_grid` columns: the first column is a blank then
    one face of each of `people` different subjects, every other column one expression
    image per class present (in `CLASSES` order) above what the model makes of each face
    with it. Faces and expressions are drawn with `seed`; neither should be trained on."""
    rng = np.random.default_rng(seed)
    subjects = np.unique(faces.meta["subject"])
    chosen = rng.choice(subjects, size=min(people, len(subjects)), replace=False)
    fi = np.array([rng.choice(np.flatnonzero(faces.meta["subject"] == s)) for s in chosen])
    ei = [
        int(rng.choice(np.flatnonzero(expressions.labels == k)))
        for k in range(len(CLASSES))
        if (expressions.labels == k).any()
    ]
    face = to_float(faces.images[fi])
    blank = np.full((1, *faces.images.shape[1:]), 255, np.uint8)
    columns = [np.concatenate([blank, faces.images[fi]])]
    for e in ei:
        expression = to_float(expressions.images[[e] * len(fi)])
        made = to_uint8(generate(face, expression))
        columns.append(np.concatenate([expressions.images[[e]], made]))
    return columns
