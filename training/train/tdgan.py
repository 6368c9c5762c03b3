"""TDGAN training: expression transfer with two disentangled branches (Xie et al. 2021).

Each step draws a random batch of face images (CK+ subjects: their identities are the
face discriminator's classes) and an independent random batch of expression images
(FER2013 Training and CK+ peak frames), and, as the reference code does:

1. encodes both, generates fake = G(face, expression) and trains the expression
   classifier head on the real expression features (CE; the features are detached, so
   only the head learns from the labels, as in the reference code);
2. every `d_face_every` steps, trains the face discriminator: CE(D_f(face), identity) +
   CE(D_f(fake), "fake" class);
3. every `d_expression_every` steps, trains the expression discriminator on real images
   only: CE(D_e(expression), label);
4. trains the generator (both encoders and the decoder) with
   lambda_face * CE(D_f(fake), identity) + lambda_expression * CE(D_e(fake), label)
   + lambda_perceptual * MSE(D_f's encoder features of fake, of face)
   + lambda_consistency * (L1(G(fake, face), face) + L1(G(expression, fake), expression)),
   the dual-image consistency: re-encoding the fake with each input reconstructs both.

Defaults are the paper's: 0.2, 0.8, 1, 5 and 5; Adam at lr 1e-4 for everything; batch 32.
Images are in [0, 1] (no normalisation), as in the reference code. Expression images are
augmented with a small random shift and a horizontal flip (the reference code's resize
to 144 + random 128 crop + flip); face images are not augmented.

The run is counted in steps (an epoch is len(expression set) // batch_size steps of random
pairs, so it can stop and resume anywhere): `last.pt` (networks, the 4 optimisers, RNG
states, history) every `save_every` steps, at the end of every epoch and when stopping;
beside it `history.json`, `losses.png` and a sample grid per save (`samples_<step>.png`,
rows of face | expression | fake | face reconstruction | expression reconstruction). With
a validation set the expression branch is evaluated as a classifier at the end of every
epoch (`val_acc` in the history, `best.pt` on a better accuracy).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from training import report
from training.data.augment import AugmentConfig, geometric
from training.data.samples import CLASSES, FaceSet
from training.nets.tdgan import TDGAN, Discriminator
from training.train import checkpoint, precision

log = logging.getLogger(__name__)

LOSSES = (
    "loss_classifier",
    "loss_d_face",
    "loss_d_expression",
    "loss_g_face",
    "loss_g_expression",
    "loss_g_perceptual",
    "loss_g_consistency_face",
    "loss_g_consistency_expression",
    "loss_g",
)


@dataclass
class TdganConfig:
    """Everything that defines a TDGAN run (saved in every checkpoint)."""

    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)  # Adam's defaults, as in the reference code
    lambda_face: float = 0.2  # CE(D_face(fake), identity)
    lambda_expression: float = 0.8  # CE(D_expression(fake), expression)
    lambda_perceptual: float = 1.0  # MSE of D_face encoder features, fake vs face
    lambda_consistency: float = 5.0  # each of the two dual-image L1 terms
    d_face_every: int = 5  # face discriminator update period (steps)
    d_expression_every: int = 10  # expression discriminator update period (steps)
    net_kwargs: dict[str, Any] = field(default_factory=dict)  # TDGAN widths etc.
    seed: int = 0
    threads: int = 0
    bf16: bool = True  # bfloat16 autocast for the networks (losses in float32); ~1.6x here
    augment: AugmentConfig = field(
        default_factory=lambda: AugmentConfig(max_shift=0.05, max_rotation_deg=0, max_scale=0)
    )
    log_every: int = 50  # steps per history row
    save_every: int = 500  # steps between checkpoints and sample grids
    limit_steps: int = 0  # >0: stop this run after that many steps (smoke runs)
    holdout_folds: tuple[int, ...] = ()  # CK+ folds whose subjects were left out
    framing: str = "fer2013"


def metadata(cfg: TdganConfig, input_size: int) -> dict[str, Any]:
    """What the generator handler needs: two named crops, the network, and the classes
    its `classify` method reads from the `expression` crop."""
    return {
        "kind": "transfer",
        "classes": list(CLASSES),
        "input": {
            "size": input_size,
            "channels": 1,
            "color": "gray",
            "mean": 0.0,  # images in [0, 1], as the paper's
            "std": 1.0,
            "framing": cfg.framing,
        },
        "inputs": ["face", "expression"],
        "classify": "expression",
        "net": {"module": "tdgan", "file": "tdgan.py", "kwargs": _plain_kwargs(cfg.net_kwargs)},
    }


def _plain_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Network kwargs as JSON-like data (lists, not tuples), as archives carry them."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()}


def identities(faces: FaceSet) -> tuple[list[str], np.ndarray]:
    """The sorted subjects of the face set and each row's identity index."""
    subjects = np.unique(faces.meta["subject"].astype(str))
    return [str(s) for s in subjects], np.searchsorted(subjects, faces.meta["subject"].astype(str))


def to_unit(images: np.ndarray) -> torch.Tensor:
    """uint8 [N,H,W] -> float [N,1,H,W] in [0, 1] (TDGAN's range)."""
    return torch.from_numpy(np.ascontiguousarray(images)).float().div(255).unsqueeze(1)


def save_grid(columns: list[torch.Tensor], path: Path) -> None:
    """One row per sample, one column per image stack ([N,1,H,W] in [0, 1]), 2x size."""
    from PIL import Image

    tiles = torch.cat([c.detach().float().clamp(0, 1) for c in columns], 3)  # [N,1,H,5W]
    grid = (torch.cat(list(tiles), 1)[0] * 255).round().byte().numpy()
    Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2)).save(path)


@contextmanager
def frozen(*modules: nn.Module) -> Iterator[None]:
    """No parameter gradients for `modules` (the generator's step through the
    discriminators needs gradients of their inputs only)."""
    params = [p for m in modules for p in m.parameters()]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


class Trainer:
    """The networks, their optimisers and one training step (see the module docstring)."""

    def __init__(self, cfg: TdganConfig, num_identities: int) -> None:
        self.cfg = cfg
        kw = cfg.net_kwargs
        self.model = TDGAN(**kw)
        d_kwargs = {
            k: kw[k] for k in ("input_size", "in_channels", "widths", "fc", "pools") if k in kw
        }
        self.fake_class = num_identities
        self.d_face = Discriminator(num_identities + 1, **d_kwargs)
        self.d_expression = Discriminator(len(CLASSES), **d_kwargs)
        m = self.model

        def adam(params: Any) -> torch.optim.Adam:
            return torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas)

        self.opt_g = adam(
            [
                *m.face_encoder.parameters(),
                *m.expression_encoder.parameters(),
                *m.decoder.parameters(),
            ]
        )
        self.opt_classifier = adam(m.classifier.parameters())
        self.opt_d_face = adam(self.d_face.parameters())
        self.opt_d_expression = adam(self.d_expression.parameters())
        self.use_bf16 = precision.use_bf16(cfg.bf16)

    def state(self) -> dict[str, Any]:
        """Networks and optimisers, for a checkpoint."""
        return {
            "model": self.model.state_dict(),
            "face_discriminator": self.d_face.state_dict(),
            "expression_discriminator": self.d_expression.state_dict(),
            "optimizer": self.opt_g.state_dict(),
            "optimizer_classifier": self.opt_classifier.state_dict(),
            "optimizer_face_discriminator": self.opt_d_face.state_dict(),
            "optimizer_expression_discriminator": self.opt_d_expression.state_dict(),
        }

    def load(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.d_face.load_state_dict(state["face_discriminator"])
        self.d_expression.load_state_dict(state["expression_discriminator"])
        self.opt_g.load_state_dict(state["optimizer"])
        self.opt_classifier.load_state_dict(state["optimizer_classifier"])
        self.opt_d_face.load_state_dict(state["optimizer_face_discriminator"])
        self.opt_d_expression.load_state_dict(state["optimizer_expression_discriminator"])

    def train(self, mode: bool = True) -> None:
        for net in (self.model, self.d_face, self.d_expression):
            net.train(mode)

    def autocast(self) -> torch.autocast:
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.use_bf16)

    def step(
        self,
        step: int,
        face: torch.Tensor,
        identity: torch.Tensor,
        expression: torch.Tensor,
        label: torch.Tensor,
    ) -> dict[str, float]:
        """One training step on images in [0, 1]; `step` (0-based, counted over the whole
        run) sets which discriminators learn. Returns the losses (NaN: not computed)."""
        cfg, m = self.cfg, self.model
        losses = dict.fromkeys(LOSSES, float("nan"))

        with self.autocast():
            f_expression = m.expression_encoder(expression)
            fake = m.decoder(f_expression, m.face_encoder(face)).float()
            logits = m.classifier(f_expression.detach())
        loss_cls = F.cross_entropy(logits.float(), label)
        self.opt_classifier.zero_grad(set_to_none=True)
        loss_cls.backward()
        self.opt_classifier.step()
        losses["loss_classifier"] = loss_cls.item()

        update_face = step % cfg.d_face_every == 0
        with self.autocast(), torch.set_grad_enabled(update_face):
            real_features, real_logits = self.d_face(face)
        if update_face:
            with self.autocast():
                _, fake_logits = self.d_face(fake.detach())
            fake_id = torch.full_like(identity, self.fake_class)
            loss_d_face = F.cross_entropy(real_logits.float(), identity) + F.cross_entropy(
                fake_logits.float(), fake_id
            )
            self.opt_d_face.zero_grad(set_to_none=True)
            loss_d_face.backward()
            self.opt_d_face.step()
            losses["loss_d_face"] = loss_d_face.item()
        real_features = real_features.detach().float()

        if step % cfg.d_expression_every == 0:
            with self.autocast():
                _, expression_logits = self.d_expression(expression)
            loss_d_expression = F.cross_entropy(expression_logits.float(), label)
            self.opt_d_expression.zero_grad(set_to_none=True)
            loss_d_expression.backward()
            self.opt_d_expression.step()
            losses["loss_d_expression"] = loss_d_expression.item()

        with frozen(self.d_face, self.d_expression), self.autocast():
            fake_features, fake_face_logits = self.d_face(fake)
            _, fake_expression_logits = self.d_expression(fake)
            # Dual-image consistency: the fake (who: face) with the face's own expression
            # gives the face back; the expression image's person with the fake's
            # expression gives the expression image back.
            rec_face = m.generate(fake, face).float()
            rec_expression = m.generate(expression, fake).float()
        g = {
            "loss_g_face": F.cross_entropy(fake_face_logits.float(), identity),
            "loss_g_expression": F.cross_entropy(fake_expression_logits.float(), label),
            "loss_g_perceptual": F.mse_loss(fake_features.float(), real_features),
            "loss_g_consistency_face": F.l1_loss(rec_face, face),
            "loss_g_consistency_expression": F.l1_loss(rec_expression, expression),
        }
        loss_g = (
            cfg.lambda_face * g["loss_g_face"]
            + cfg.lambda_expression * g["loss_g_expression"]
            + cfg.lambda_perceptual * g["loss_g_perceptual"]
            + cfg.lambda_consistency
            * (g["loss_g_consistency_face"] + g["loss_g_consistency_expression"])
        )
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        losses.update({k: v.item() for k, v in g.items()})
        losses["loss_g"] = loss_g.item()
        return losses

    @torch.inference_mode()
    def samples(
        self, face: torch.Tensor, expression: torch.Tensor, noise: torch.Tensor
    ) -> list[torch.Tensor]:
        """face | expression | fake | face reconstruction | expression reconstruction."""
        m = self.model
        m.eval()
        fake = m.generate(face, expression, noise)
        out = [
            face,
            expression,
            fake,
            m.generate(fake, face, noise),
            m.generate(expression, fake, noise),
        ]
        m.train()
        return out

    @torch.inference_mode()
    def expression_probabilities(self, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
        """The expression branch as a classifier: softmax probabilities for uint8 crops."""
        m = self.model
        m.eval()
        out = [
            torch.softmax(m.classify(to_unit(images[i : i + batch_size])).float(), 1).numpy()
            for i in range(0, len(images), batch_size)
        ]
        m.train()
        return np.concatenate(out) if out else np.zeros((0, len(CLASSES)), np.float32)


def _config_from_dict(d: dict[str, Any]) -> TdganConfig:
    d = dict(d)
    d["augment"] = AugmentConfig(**d.get("augment", {}))
    d["betas"] = tuple(d["betas"])
    d["holdout_folds"] = tuple(d.get("holdout_folds", ()))
    return TdganConfig(**d)


def _plain(cfg: TdganConfig) -> dict[str, Any]:
    """The config as checkpoint-safe plain data (lists, not tuples)."""
    d = asdict(cfg)
    d["betas"] = list(cfg.betas)
    d["holdout_folds"] = list(cfg.holdout_folds)
    d["net_kwargs"] = _plain_kwargs(cfg.net_kwargs)
    return d


def train_tdgan(
    cfg: TdganConfig,
    faces: FaceSet,
    expressions: FaceSet,
    out: Path,
    val: FaceSet | None = None,
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train on random (face, expression) pairs: `faces` needs a `subject` column (the
    identities), `expressions` labels in `CLASSES` (rows labelled -1 are dropped).

    `resume` continues from `out/last.pt` with its saved configuration, except `epochs`,
    `limit_steps` and `threads`, which come from `cfg`. Returns the history and the best validation
    summary (if `val`).
    """
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    expressions = expressions.subset(expressions.labels >= 0)
    if val is not None:
        val = val.subset(val.labels >= 0)
    size = int(faces.images.shape[1])
    if expressions.images.shape[1:] != faces.images.shape[1:]:
        raise ValueError("face and expression images differ in size")
    subjects, face_ids = identities(faces)

    state: dict[str, Any] | None = None
    if resume and (out / checkpoint.LAST).exists():
        state = checkpoint.load(out / checkpoint.LAST)
        # The run's definition comes from the checkpoint; how long and on how many threads
        # it runs are the caller's.
        epochs, limit, threads = cfg.epochs, cfg.limit_steps, cfg.threads
        cfg = _config_from_dict(state["config"])
        cfg.epochs, cfg.limit_steps, cfg.threads = epochs, limit, threads
        if state["identities"] != subjects:
            raise ValueError("the face set's subjects differ from the checkpoint's")
        log.info("resuming %s from step %d", out, state["step"])
    else:
        cfg.net_kwargs = {"input_size": size, "num_classes": len(CLASSES), **cfg.net_kwargs}
    meta = metadata(cfg, size)

    torch.manual_seed(cfg.seed)
    trainer = Trainer(cfg, len(subjects))
    params = sum(p.numel() for p in trainer.model.parameters())
    d_params = sum(
        p.numel() for d in (trainer.d_face, trainer.d_expression) for p in d.parameters()
    )
    log.info("tdgan: %d parameters served, %d in the discriminators", params, d_params)
    gen = torch.Generator().manual_seed(cfg.seed)
    history: list[dict[str, float]] = []
    best: dict[str, Any] = {"accuracy": -1.0}
    step = 0
    if state is not None:
        trainer.load(state)
        gen.set_state(state["rng"])
        torch.set_rng_state(state["torch_rng"])
        history, best, step = state["history"], state["best"], int(state["step"])

    # Fixed sample pairs and noise (the same grid rows at every save, across resumes).
    pick = np.random.default_rng(cfg.seed)
    fixed_face = to_unit(faces.images[pick.choice(len(faces), min(8, len(faces)), False)])
    fixed_expr = to_unit(
        expressions.images[
            pick.choice(len(expressions), len(fixed_face), len(expressions) < len(fixed_face))
        ]
    )
    noise_gen = torch.Generator().manual_seed(cfg.seed + 1)
    fixed_noise = torch.rand(
        len(fixed_face),
        trainer.model.noise_channels,
        trainer.model.map_size,
        trainer.model.map_size,
        generator=noise_gen,
    )

    # uint8 in memory (FER2013 as float would take 4x); batches become [0, 1] floats.
    face_images = torch.from_numpy(faces.images).unsqueeze(1)
    expr_images = torch.from_numpy(expressions.images).unsqueeze(1)
    face_labels = torch.from_numpy(face_ids.astype(np.int64))
    expr_labels = torch.from_numpy(expressions.labels)
    per_epoch = max(1, len(expressions) // cfg.batch_size)
    total = cfg.epochs * per_epoch
    stop = min(total, step + cfg.limit_steps) if cfg.limit_steps else total

    def save(name: str = checkpoint.LAST) -> None:
        ckpt = {
            "step": step,
            "epoch": step / per_epoch,
            **trainer.state(),
            "rng": gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "config": _plain(cfg),
            "metadata": meta,
            "identities": subjects,
            "history": history,
            "best": best,
            "parameters": params,
        }
        checkpoint.save(ckpt, out / name)

    def write_reports() -> None:
        save_grid(
            trainer.samples(fixed_face, fixed_expr, fixed_noise), out / f"samples_{step:06d}.png"
        )
        (out / "history.json").write_text(json.dumps(history, indent=1))
        report.plot_losses(history, out / "losses.png")

    trainer.train()
    window: list[dict[str, float]] = []
    t0 = time.time()
    bar = tqdm(total=stop, initial=step, desc="tdgan", disable=not progress, leave=False)
    while step < stop:
        fi = torch.randint(len(face_images), (cfg.batch_size,), generator=gen)
        ei = torch.randint(len(expr_images), (cfg.batch_size,), generator=gen)
        face = face_images[fi].float().div_(255)
        expression = geometric(expr_images[ei].float().div_(255), cfg.augment, gen)
        losses = trainer.step(step, face, face_labels[fi], expression, expr_labels[ei])
        window.append(losses)
        step += 1
        bar.update()
        bar.set_postfix(g=f"{losses['loss_g']:.3f}", cls=f"{losses['loss_classifier']:.3f}")
        epoch_end = step % per_epoch == 0
        if step % cfg.log_every == 0 or epoch_end or step == stop:
            row: dict[str, float] = {"step": step, "epoch": step / per_epoch}
            for k in LOSSES:
                seen = [w[k] for w in window if not np.isnan(w[k])]
                if seen:
                    row[k] = float(np.mean(seen))
            row["seconds_per_step"] = (time.time() - t0) / len(window)
            summary = None
            if epoch_end and val is not None and len(val):
                probs = trainer.expression_probabilities(val.images)
                summary = report.summary(val.labels, probs, list(CLASSES))
                row["val_acc"] = summary["accuracy"]
            history.append(row)
            if summary is not None and summary["accuracy"] > best["accuracy"]:
                best = {**summary, "step": step, "epoch": step // per_epoch}
                save(checkpoint.BEST)
            window, t0 = [], time.time()
            msg = (
                f"tdgan step {step}/{total} (epoch {row['epoch']:.2f}) G {row['loss_g']:.4f} "
                f"classifier {row['loss_classifier']:.4f}"
                + (f" val {row['val_acc']:.4f}" if "val_acc" in row else "")
            )
            log.info(msg)
            if progress and (epoch_end or step == stop):
                print(msg, flush=True)
        if step % cfg.save_every == 0 or epoch_end or step == stop:
            save()
            write_reports()
    bar.close()
    return {"step": step, "total_steps": total, "history": history, "best": best}
