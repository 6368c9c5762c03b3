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
   only: CE(D_e(expression), label); with `expression_fake_class` (not the paper's) it has
   an 8th "fake" class and learns CE(D_e(fake), "fake") as well, as the face discriminator
   does, so that it cannot be pleased by what no real face shows; with `critic_augment`
   (not the paper's) every image the expression discriminator sees, real or generated,
   in its own updates and in the generator's, first goes through the strong training
   augmentation (warp, lighting, random erasing; differentiable, in the manner of
   DiffAugment, Zhao et al. 2020), so that what pleases it must survive those changes
   as a real expression does, rather than as a pixel pattern; the first `critic_warmup`
   steps of a run (not the paper's) train only this discriminator, on real images, so that
   the generator's expression signal comes from a critic that already knows the
   expressions (the paper's critic learns every 10th step from step 0);
4. trains the generator (both encoders and the decoder) with
   lambda_face * CE(D_f(fake), identity) + lambda_expression * CE(D_e(fake), label)
   + lambda_perceptual * MSE(D_f's encoder features of fake, of face)
   + lambda_consistency * (L1(G(fake, face), face) + L1(G(expression, fake), expression)),
   the dual-image consistency: re-encoding the fake with each input reconstructs both.

Defaults are the paper's: 0.2, 0.8, 1, 5 and 5; Adam at lr 1e-4 for everything; batch 32.
Images are in [0, 1] (no normalisation), as in the reference code. Expression images are
augmented with a small random shift and a horizontal flip (the reference code's resize
to 144 + random 128 crop + flip); face images are not augmented.

A method of the shared training loop (`training/train/loop.py`): an epoch is
len(expression set) // batch_size steps of random pairs; the loop keeps `last.pt` (networks,
the 4 optimisers, random states) every `save_every` steps, at every epoch's end and when
stopping, and this method draws `losses.png` and a sample grid per save
(`samples_<step>.png`, rows of face | expression | fake | face reconstruction | expression
reconstruction). With a validation set the expression branch is evaluated as a classifier
at every epoch's end (`val_acc` in the history, `best.pt` on a better accuracy).

On a GPU the step is bound by host overhead (kernel launches), not arithmetic: it keeps
the data on the device, returns its losses as tensors (no per-step `.item()`), uses fused
Adam, and its networks can be compiled (`--compile`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from training import report
from training.data.augment import PRESETS, AugmentConfig, augment, geometric
from training.data.samples import CLASSES, FaceSet
from training.data.tensors import to_device, to_float, to_uint8
from training.nets.tdgan import TDGAN, Discriminator, discriminator_kwargs
from training.train.loop import Context, Method, RunOptions, fit, saved_config

log = logging.getLogger(__name__)

#: What `critic_augment` does to every image the expression discriminator sees.
CRITIC_AUGMENT = PRESETS["strong"]

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
    expression_fake_class: bool = False  # D_expression also learns a "fake" class
    critic_augment: bool = False  # D_expression sees augmented images, real and generated
    critic_warmup: int = 0  # first steps: only D_expression learns, on real images
    net_kwargs: dict[str, Any] = field(default_factory=dict)  # TDGAN widths etc.
    seed: int = 0
    augment: AugmentConfig = field(
        default_factory=lambda: AugmentConfig(max_shift=0.05, max_rotation_deg=0, max_scale=0)
    )
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


class TdganMethod(Method):
    """The networks, their optimisers, the data on the device and one training step (see
    the module docstring)."""

    name = "tdgan"
    must_match = ("identities",)

    def __init__(
        self,
        cfg: TdganConfig,
        faces: FaceSet,
        expressions: FaceSet,
        ctx: Context,
        val: FaceSet | None = None,
    ) -> None:
        super().__init__(ctx)
        self.cfg, self.val = cfg, val
        device = ctx.device
        self.subjects, face_ids = identities(faces)
        kw = cfg.net_kwargs
        self.meta = metadata(cfg, int(faces.images.shape[1]))
        self.model = TDGAN(**kw).to(device)
        d_kwargs = discriminator_kwargs(kw)
        self.fake_class = len(self.subjects)
        self.d_face = Discriminator(self.fake_class + 1, **d_kwargs).to(device)
        critic_classes = len(CLASSES) + int(cfg.expression_fake_class)
        self.d_expression = Discriminator(critic_classes, **d_kwargs).to(device)
        m = self.model
        self.parameters = sum(p.numel() for p in m.parameters())
        d_params = sum(p.numel() for d in (self.d_face, self.d_expression) for p in d.parameters())
        log.info("tdgan: %d parameters served, %d in the discriminators", self.parameters, d_params)

        def adam(params: Any) -> torch.optim.Adam:
            return torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, fused=ctx.fused or None)

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
        ctx.compile(
            m.face_encoder,
            m.expression_encoder,
            m.decoder,
            m.classifier,
            self.d_face,
            self.d_expression,
        )

        # uint8 on the device (FER2013 as float would take 4x); batches become [0, 1].
        self.face_images = to_device(faces.images, device)
        self.expr_images = to_device(expressions.images, device)
        self.face_labels = torch.from_numpy(face_ids.astype(np.int64)).to(device)
        self.expr_labels = torch.from_numpy(expressions.labels).to(device)
        self.epochs = cfg.epochs
        self.steps_per_epoch = max(1, len(expressions) // cfg.batch_size)

        # Fixed sample pairs and noise: the same grid rows at every save, across resumes.
        pick = np.random.default_rng(cfg.seed)
        self.fixed_face = to_float(faces.images[pick.choice(len(faces), min(8, len(faces)), False)])
        k = len(self.fixed_face)
        replace = len(expressions) < k
        self.fixed_expr = to_float(expressions.images[pick.choice(len(expressions), k, replace)])
        noise_gen = torch.Generator().manual_seed(cfg.seed + 1)
        size = m.map_size
        self.fixed_noise = torch.rand(k, m.noise_channels, size, size, generator=noise_gen)

    def config(self) -> dict[str, Any]:
        return _plain(self.cfg)

    def networks(self) -> list[nn.Module]:
        return [self.model, self.d_face, self.d_expression]

    def stateful(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "face_discriminator": self.d_face,
            "expression_discriminator": self.d_expression,
            "optimizer": self.opt_g,
            "optimizer_classifier": self.opt_classifier,
            "optimizer_face_discriminator": self.opt_d_face,
            "optimizer_expression_discriminator": self.opt_d_expression,
        }

    def extra_state(self) -> dict[str, Any]:
        return {"metadata": self.meta, "identities": self.subjects, "parameters": self.parameters}

    def critic_view(self, x: torch.Tensor) -> torch.Tensor:
        """An image batch as the expression discriminator sees it (see `critic_augment`)."""
        if not self.cfg.critic_augment:
            return x
        return augment(x, CRITIC_AUGMENT, self.ctx.gen)

    def step(self, step: int, index: int) -> dict[str, torch.Tensor]:
        """One step on a random batch of faces and one of expressions; `step` (counted
        over the whole run) sets which discriminators learn, and whether the run is still
        in its critic warm-up (the expression discriminator alone, on real images)."""
        cfg, gen, dev = self.cfg, self.ctx.gen, self.ctx.device
        fi = torch.randint(len(self.face_images), (cfg.batch_size,), generator=gen, device=dev)
        ei = torch.randint(len(self.expr_images), (cfg.batch_size,), generator=gen, device=dev)
        expression = geometric(self.expr_images[ei].float().div_(255), cfg.augment, gen)
        if step < cfg.critic_warmup:
            return {"loss_d_expression": self.update_critic(expression, self.expr_labels[ei])}
        face = self.face_images[fi].float().div_(255)
        return self.train_step(step, face, self.face_labels[fi], expression, self.expr_labels[ei])

    def update_critic(
        self, expression: torch.Tensor, label: torch.Tensor, fake: torch.Tensor | None = None
    ) -> torch.Tensor:
        """One update of the expression discriminator: CE on the real `expression` images,
        plus CE(D_e(fake), "fake") with `expression_fake_class` (needs the detached `fake`);
        returns the detached loss."""
        with self.ctx.autocast():
            _, logits = self.d_expression(self.critic_view(expression))
        loss = F.cross_entropy(logits.float(), label)
        if self.cfg.expression_fake_class and fake is not None:
            with self.ctx.autocast():
                _, fake_logits = self.d_expression(self.critic_view(fake))
            loss = loss + F.cross_entropy(fake_logits.float(), torch.full_like(label, len(CLASSES)))
        self.opt_d_expression.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_d_expression.step()
        return loss.detach()

    def train_step(
        self,
        step: int,
        face: torch.Tensor,
        identity: torch.Tensor,
        expression: torch.Tensor,
        label: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """The losses and updates of one step on images in [0, 1] (see the module
        docstring); returns the losses computed, as detached tensors."""
        cfg, m = self.cfg, self.model
        losses: dict[str, torch.Tensor] = {}

        with self.ctx.autocast():
            f_expression = m.expression_encoder(expression)
            fake = m.decoder(f_expression, m.face_encoder(face)).float()
            logits = m.classifier(f_expression.detach())
        loss_cls = F.cross_entropy(logits.float(), label)
        self.opt_classifier.zero_grad(set_to_none=True)
        loss_cls.backward()
        self.opt_classifier.step()
        losses["loss_classifier"] = loss_cls.detach()

        update_face = step % cfg.d_face_every == 0
        with self.ctx.autocast(), torch.set_grad_enabled(update_face):
            real_features, real_logits = self.d_face(face)
        if update_face:
            with self.ctx.autocast():
                _, fake_logits = self.d_face(fake.detach())
            fake_id = torch.full_like(identity, self.fake_class)
            loss_d_face = F.cross_entropy(real_logits.float(), identity) + F.cross_entropy(
                fake_logits.float(), fake_id
            )
            self.opt_d_face.zero_grad(set_to_none=True)
            loss_d_face.backward()
            self.opt_d_face.step()
            losses["loss_d_face"] = loss_d_face.detach()
        real_features = real_features.detach().float()

        if step % cfg.d_expression_every == 0:
            losses["loss_d_expression"] = self.update_critic(expression, label, fake.detach())

        with frozen(self.d_face, self.d_expression), self.ctx.autocast():
            fake_features, fake_face_logits = self.d_face(fake)
            _, fake_expression_logits = self.d_expression(self.critic_view(fake))
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
        losses.update({k: v.detach() for k, v in g.items()})
        losses["loss_g"] = loss_g.detach()
        return losses

    @torch.inference_mode()
    def samples(self) -> list[torch.Tensor]:
        """face | expression | fake | face reconstruction | expression reconstruction, for
        the fixed sample pairs and noise."""
        m, dev = self.model, self.ctx.device
        face, expression = self.fixed_face.to(dev), self.fixed_expr.to(dev)
        noise = self.fixed_noise.to(dev)
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
            torch.softmax(m.classify(to_float(images[i : i + batch_size]).to(self.ctx.device)), 1)
            .float()
            .cpu()
            .numpy()
            for i in range(0, len(images), batch_size)
        ]
        m.train()
        return np.concatenate(out) if out else np.zeros((0, len(CLASSES)), np.float32)

    def end_epoch(self, epoch: int) -> dict[str, Any] | None:
        if self.val is None or not len(self.val):
            return None
        probs = self.expression_probabilities(self.val.images)
        return report.summary(self.val.labels, probs, list(CLASSES))

    def reports(self, out: Path, step: int, history: list[dict[str, Any]]) -> None:
        columns = [to_uint8(c) for c in self.samples()]
        report.save_grid(columns, out / f"samples_{step:06d}.png")
        report.plot_losses(history, out / "losses.png")


def train_tdgan(
    cfg: TdganConfig,
    faces: FaceSet,
    expressions: FaceSet,
    out: Path,
    val: FaceSet | None = None,
    resume: bool = False,
    opts: RunOptions | None = None,
) -> dict[str, Any]:
    """Train on random (face, expression) pairs: `faces` needs a `subject` column (the
    identities), `expressions` labels in `CLASSES` (rows labelled -1 are dropped).

    `resume` continues from `out/last.pt` with its saved configuration, except `epochs`,
    which comes from `cfg`. Returns the loop's result (step, total steps, why it stopped,
    history, best validation summary if `val`).
    """
    opts = opts or RunOptions(log_every=50, save_every=500)
    expressions = expressions.subset(expressions.labels >= 0)
    if val is not None:
        val = val.subset(val.labels >= 0)
    size = int(faces.images.shape[1])
    if expressions.images.shape[1:] != faces.images.shape[1:]:
        raise ValueError("face and expression images differ in size")
    saved = saved_config(out, resume)
    if saved is not None:
        cfg = replace(_config_from_dict(saved), epochs=cfg.epochs)
    else:
        cfg.net_kwargs = {"input_size": size, "num_classes": len(CLASSES), **cfg.net_kwargs}
    method = TdganMethod(cfg, faces, expressions, Context(opts, cfg.seed), val)
    return fit(method, opts, out, resume=saved is not None)
