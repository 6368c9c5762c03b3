"""Procedural grayscale faces: the same person neutral and expressive, at any head yaw.

No multi-pose face set is available here, so frontalization (and any test that needs a
known person, expression and pose) uses faces drawn by this module. How a face is made:

- An `Identity` (head shape, eye spacing and size, brows, nose, mouth, skin, hair, ...) is
  sampled from an integer id, so an id always means the same person.
- An `Expression` moves the features: mouth curve/opening/width/roundness, brow raise,
  inner-brow raise or lowering, eye opening, lifted upper lip, wrinkles and folds. The
  seven FER2013 classes have templates (`EXPRESSIONS`); `intensity` blends from neutral.
- The features are painted into a texture in frontal face coordinates (`u`: horizontal
  position in head half-widths, `Y`: image height fraction). Each output pixel is then
  ray-cast onto the head, an elliptic cylinder (depth > width) rotated by the yaw, with a
  parallax bump for the nose and cheeks, and shaded with a Lambertian light. Yaw thus
  shifts and compresses the features as a real head turn does, the nose moves across the
  face, and the far side disappears. Positive yaw turns the face towards the image's right.
- A `Scene` (light, background, head placement, gaze, exposure, noise) varies the
  capture; pairs and multi-yaw groups share one scene so only expression or pose differs.

Everything is deterministic: ids and seeds fully define every image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from training.data.samples import CLASSES, FaceSet

NEUTRAL = CLASSES.index("neutral")

#: Yaws of `make_multi_yaw` by default (degrees).
DEFAULT_YAWS: tuple[float, ...] = (-60, -45, -30, -15, 0, 15, 30, 45, 60)

_SUPERSAMPLE = 2  # render at 2x and area-average down: smooth edges at 48 px


@dataclass(frozen=True)
class Identity:
    """The fixed look of one synthetic person (lengths: `Y` in image-height fractions,
    `u` in head half-widths; albedos in [0, 1])."""

    seed: int = 0
    head_width: float = 0.40  # half-width, fraction of the image width
    head_top: float = 0.56  # centre to crown
    head_bottom: float = 0.47  # centre to chin
    head_y: float = 0.50  # head centre
    jaw: float = 2.2  # chin shape exponent: 1.6 pointed ... 3 square
    depth: float = 1.2  # head depth / width
    skin: float = 0.7
    hair: float = 0.2
    hair_line: float = 0.17  # forehead hairline height
    hair_style: int = 0  # 0 short, 1 fringe, 2 receding
    stubble: float = 0.0
    eye_y: float = 0.42
    eye_spacing: float = 0.42  # eye centre, u
    eye_width: float = 0.19  # half-width, u
    eye_height: float = 0.032  # upper-lid height of an open eye, Y
    iris: float = 0.25
    brow_gap: float = 0.065  # brow above the eye centre, Y
    brow_thickness: float = 0.02
    brow_length: float = 0.3  # u
    brow_arch: float = 0.01
    brow: float = 0.2
    nose_length: float = 0.16  # eye line to nose tip, Y
    nose_width: float = 0.13  # u
    nose_height: float = 0.24  # protrusion, head half-widths
    mouth_gap: float = 0.09  # nose tip to mouth, Y
    mouth_width: float = 0.33  # half-width, u
    lip_thickness: float = 0.018
    lip: float = 0.75  # lip albedo relative to skin

    @classmethod
    def sample(cls, seed: int) -> Identity:
        """The person with id `seed` (the same id always gives the same person)."""
        r = np.random.default_rng([0x5EED, seed])

        def u(lo: float, hi: float) -> float:
            return float(r.uniform(lo, hi))

        skin = u(0.35, 0.9)
        style = int(r.choice(3, p=[0.55, 0.3, 0.15]))
        return cls(
            seed=seed,
            head_width=u(0.42, 0.5),
            head_top=u(0.56, 0.66),
            head_bottom=u(0.46, 0.53),
            head_y=u(0.46, 0.5),
            jaw=u(1.6, 3.0),
            depth=u(1.05, 1.3),
            skin=skin,
            hair=u(0.05, 0.35) if r.random() < 0.8 else u(0.6, 0.9),
            hair_line=u(0.2, 0.27) if style == 1 else u(0.04, 0.1) if style == 2 else u(0.12, 0.2),
            hair_style=style,
            stubble=u(0.2, 0.6) if r.random() < 0.2 else 0.0,
            eye_y=u(0.39, 0.45),
            eye_spacing=u(0.37, 0.47),
            eye_width=u(0.16, 0.22),
            eye_height=u(0.025, 0.04),
            iris=u(0.08, 0.45),
            brow_gap=u(0.05, 0.08),
            brow_thickness=u(0.012, 0.03),
            brow_length=u(0.24, 0.36),
            brow_arch=u(0.0, 0.02),
            brow=u(0.05, 0.35) if r.random() < 0.8 else u(0.4, 0.6),
            nose_length=u(0.13, 0.19),
            nose_width=u(0.10, 0.16),
            nose_height=u(0.12, 0.24),
            mouth_gap=u(0.07, 0.11),
            mouth_width=u(0.27, 0.40),
            lip_thickness=u(0.012, 0.025),
            lip=u(0.6, 0.9),
        )


@dataclass(frozen=True)
class Expression:
    """Feature movements relative to the neutral face (all 0 except the two multipliers)."""

    brow_raise: float = 0.0  # whole brows up (+) or down (-)
    brow_inner: float = 0.0  # inner brow ends up (+: sad, fear) or down (-: angry)
    brow_squeeze: float = 0.0  # inner ends drawn together
    brow_arch: float = 0.0  # extra arch (+: surprise) or flattening (-)
    eye_open: float = 1.0  # upper-lid opening multiplier
    lower_lid: float = 0.0  # lower lid pushed up (squint)
    mouth_curve: float = 0.0  # corners up (+: smile) or down (-: frown)
    mouth_open: float = 0.0  # lip separation
    mouth_width: float = 1.0  # width multiplier
    mouth_round: float = 0.0  # O-shaped opening
    lip_press: float = 0.0  # thin, pressed lips
    upper_lip: float = 0.0  # upper lip raised (disgust)
    teeth: float = 0.0  # how much of the opening shows teeth
    nose_wrinkle: float = 0.0
    cheek: float = 0.0  # raised cheeks and deeper nasolabial folds
    forehead: float = 0.0  # horizontal forehead lines
    frown_lines: float = 0.0  # vertical lines between the brows
    jaw_drop: float = 0.0

    def blend(self, intensity: float) -> Expression:
        """This expression at `intensity` (0: neutral, 1: as defined)."""
        base = Expression()
        return Expression(
            **{
                f.name: getattr(base, f.name)
                + intensity * (getattr(self, f.name) - getattr(base, f.name))
                for f in fields(self)
            }
        )

    def jitter(self, rng: np.random.Generator, amount: float = 0.12) -> Expression:
        """Small random variation of every moved feature (keeps neutral features still)."""
        base = Expression()
        changes: dict[str, float] = {}
        for f in fields(self):
            value, rest = getattr(self, f.name), getattr(base, f.name)
            if value != rest:
                changes[f.name] = value + (value - rest) * float(rng.normal(0, amount))
        return replace(self, **changes)


#: Templates of the seven classes, in `CLASSES` order.
EXPRESSIONS: dict[str, Expression] = {
    "angry": Expression(
        brow_raise=-0.9,
        brow_inner=-1.4,
        brow_squeeze=0.9,
        eye_open=1.0,
        lower_lid=0.45,
        mouth_curve=-0.4,
        mouth_width=0.75,
        lip_press=1.0,
        frown_lines=1.0,
    ),
    "disgust": Expression(
        brow_raise=-0.35,
        brow_inner=-0.5,
        brow_squeeze=0.35,
        eye_open=0.6,
        lower_lid=0.6,
        mouth_curve=-0.45,
        mouth_open=0.45,
        upper_lip=1.2,
        teeth=0.8,
        nose_wrinkle=1.0,
        cheek=0.45,
    ),
    "fear": Expression(
        brow_raise=0.8,
        brow_inner=0.8,
        brow_squeeze=0.45,
        brow_arch=-0.5,
        eye_open=1.55,
        mouth_curve=-0.35,
        mouth_open=0.75,
        mouth_width=1.2,
        teeth=0.35,
        forehead=0.8,
    ),
    "happy": Expression(
        brow_raise=0.1,
        eye_open=0.8,
        lower_lid=0.65,
        mouth_curve=1.0,
        mouth_open=0.4,
        mouth_width=1.25,
        teeth=1.0,
        cheek=1.0,
    ),
    "sad": Expression(
        brow_inner=1.3,
        brow_squeeze=0.25,
        brow_arch=-0.4,
        eye_open=0.7,
        mouth_curve=-1.3,
        mouth_width=0.92,
        lip_press=0.3,
    ),
    "surprise": Expression(
        brow_raise=1.3,
        brow_arch=0.8,
        eye_open=1.65,
        mouth_open=1.4,
        mouth_width=0.72,
        mouth_round=1.0,
        jaw_drop=1.0,
        forehead=1.0,
    ),
    "neutral": Expression(),
}
assert tuple(EXPRESSIONS) == CLASSES


@dataclass(frozen=True)
class Scene:
    """How one capture looks: light, background, head placement, gaze, exposure, noise."""

    light_azimuth: float = 0.0  # radians; + lights the image's right side
    light_elevation: float = 0.35  # radians; + from above
    ambient: float = 0.45
    diffuse: float = 0.65
    background: float = 0.35
    background_gradient: tuple[float, float] = (0.0, 0.0)
    shift: tuple[float, float] = (0.0, 0.0)  # head offset, image fractions
    scale: float = 1.0
    roll: float = 0.0  # degrees
    gaze: tuple[float, float] = (0.0, 0.0)  # iris offset, fraction of the eye half-width
    gamma: float = 1.0
    contrast: float = 1.0
    noise: float = 0.0  # Gaussian noise sigma, grey levels

    @classmethod
    def sample(cls, rng: np.random.Generator) -> Scene:
        """A random capture: moderate light, placement and exposure changes, a little noise."""
        return cls(
            light_azimuth=float(rng.uniform(-0.9, 0.9)),
            light_elevation=float(rng.uniform(0.0, 0.7)),
            ambient=float(rng.uniform(0.3, 0.6)),
            diffuse=float(rng.uniform(0.45, 0.8)),
            background=float(rng.uniform(0.05, 0.9)),
            background_gradient=(float(rng.normal(0, 0.15)), float(rng.normal(0, 0.15))),
            shift=(float(rng.normal(0, 0.015)), float(rng.normal(0, 0.015))),
            scale=float(rng.uniform(0.93, 1.07)),
            roll=float(rng.normal(0, 3.0)),
            gaze=(float(rng.normal(0, 0.12)), float(rng.normal(0, 0.05))),
            gamma=float(np.exp(rng.normal(0, 0.15))),
            contrast=float(rng.uniform(0.8, 1.15)),
            noise=float(rng.uniform(0.5, 4.0)),
        )


def expression_of(expression: int | str | Expression, intensity: float = 1.0) -> Expression:
    """An `Expression` from a class index, a class name or an `Expression`, blended."""
    if isinstance(expression, Expression):
        return expression.blend(intensity)
    name = CLASSES[expression] if isinstance(expression, int) else expression
    if name not in EXPRESSIONS:
        raise ValueError(f"unknown expression {name!r}; one of {', '.join(CLASSES)}")
    return EXPRESSIONS[name].blend(intensity)


# -- the texture: features painted in (phi, Y), phi the angle around the head axis ---------


class _Texture:
    """Albedo in [0, 1] over phi in [-pi, pi) (columns) and Y in [0, 1] (rows)."""

    def __init__(self, rows: int, head_width: float, fill: float) -> None:
        self.rows, self.cols = rows, 2 * rows
        self.head_width = head_width  # image units per u, to keep round things round
        self.albedo = np.full((self.rows, self.cols), fill, dtype=np.float32)

    def to_px(self, u: np.ndarray, y: np.ndarray) -> list[tuple[float, float]]:
        phi = np.arcsin(np.clip(u, -1.0, 1.0))
        return self.phi_to_px(phi, y)

    def phi_to_px(self, phi: np.ndarray, y: np.ndarray) -> list[tuple[float, float]]:
        x = (np.asarray(phi) + math.pi) / (2 * math.pi) * self.cols
        return list(zip(x.tolist(), (np.asarray(y) * self.rows).tolist(), strict=True))

    def paint(
        self,
        shapes: Sequence[list[tuple[float, float]]],
        value: float,
        *,
        line: float = 0.0,
        blur: float = 0.0,
        multiply: bool = False,
        clip: _Mask | None = None,
    ) -> _Mask:
        """Fill polygons (or draw polylines `line` Y-units wide) and blend them in: set the
        albedo to `value`, or multiply it by `value`. Returns the coverage mask."""
        pts = [p for s in shapes for p in s]
        width = max(1, round(line * self.rows)) if line else 0
        margin = int(3 * blur * self.rows) + width + 2
        xs, ys = [p[0] for p in pts] or [0.0], [p[1] for p in pts] or [0.0]
        x0 = max(0, int(min(xs)) - margin)
        y0 = max(0, int(min(ys)) - margin)
        x1 = min(self.cols, int(max(xs)) + margin + 1)
        y1 = min(self.rows, int(max(ys)) + margin + 1)
        if not pts or x1 <= x0 or y1 <= y0:
            return _Mask(0, 0, np.zeros((0, 0), np.float32))
        canvas = Image.new("L", (x1 - x0, y1 - y0), 0)
        draw = ImageDraw.Draw(canvas)
        for s in shapes:
            local = [(x - x0, y - y0) for x, y in s]
            if line:
                draw.line(local, fill=255, width=width, joint="curve")
            elif len(local) >= 3:
                draw.polygon(local, fill=255)
        if blur:
            canvas = canvas.filter(ImageFilter.GaussianBlur(blur * self.rows))
        mask = np.asarray(canvas, dtype=np.float32) / 255.0
        if clip is not None:
            mask = mask * clip.window(y0, x0, mask.shape)
        region = self.albedo[y0:y1, x0:x1]
        target = region * value if multiply else np.float32(value)
        self.albedo[y0:y1, x0:x1] = region + mask * (target - region)
        return _Mask(y0, x0, mask)


@dataclass(frozen=True)
class _Mask:
    """A coverage mask stored as a window of the texture at (`y0`, `x0`)."""

    y0: int
    x0: int
    values: np.ndarray

    def window(self, y0: int, x0: int, shape: tuple[int, ...]) -> np.ndarray:
        """This mask cut to the window of `shape` at (`y0`, `x0`), zero outside."""
        out = np.zeros(shape, np.float32)
        h, w = self.values.shape
        top, left = max(y0, self.y0), max(x0, self.x0)
        bottom, right = min(y0 + shape[0], self.y0 + h), min(x0 + shape[1], self.x0 + w)
        if bottom > top and right > left:
            out[top - y0 : bottom - y0, left - x0 : right - x0] = self.values[
                top - self.y0 : bottom - self.y0, left - self.x0 : right - self.x0
            ]
        return out


def _curve(n: int = 25) -> np.ndarray:
    return np.linspace(-1.0, 1.0, n)


def _paint_hair(tex: _Texture, who: Identity) -> None:
    phi = np.linspace(-math.pi, math.pi, 181)
    side = np.abs(phi) / (math.pi / 2)  # 0 at the front, 1 at the ears, 2 at the back
    ear_top = who.eye_y - 0.01
    nape = who.eye_y + who.nose_length + 0.12
    # Front: a flat fringe or a hairline rising a little towards the temples.
    front = (
        np.full_like(phi, who.hair_line) if who.hair_style == 1 else who.hair_line + 0.03 * side**2
    )
    temples = np.clip((side - 0.7) / 0.25, 0, 1)
    line = front + (ear_top - front) * temples**2  # sideburns down to the top of the ears
    behind = np.clip((side - 1.3) / 0.6, 0, 1)
    line = line + (nape - ear_top) * behind**2 * (3 - 2 * behind)  # behind the ears, the nape
    if who.hair_style == 2:  # receding: bare crown, hair kept at the sides and back
        line = np.where(side < 0.55, who.hair_line, line)
    top = np.full_like(phi, -0.05)
    shape = tex.phi_to_px(np.concatenate([phi, phi[::-1]]), np.concatenate([line, top[::-1]]))
    mask = tex.paint([shape], who.hair, blur=0.006)
    # Strands: a fixed streak pattern per person.
    noise = np.random.default_rng([0x4A12, who.seed]).normal(0, 1, tex.cols)
    streaks = np.convolve(noise, np.ones(5) / 5, mode="same").astype(np.float32)
    h, w = mask.values.shape
    window = tex.albedo[mask.y0 : mask.y0 + h, mask.x0 : mask.x0 + w]
    window *= 1 + 0.12 * mask.values * streaks[None, mask.x0 : mask.x0 + w]


def _paint_brows(tex: _Texture, who: Identity, ex: Expression) -> float:
    """Brows; returns their mean height (for forehead lines)."""
    base = who.eye_y - who.brow_gap - 0.04 * ex.brow_raise
    t = np.linspace(0.0, 1.0, 20)
    for s in (-1, 1):
        inner = who.eye_spacing - who.eye_width * 0.9 - 0.07 * ex.brow_squeeze
        u = s * (inner + who.brow_length * t)
        arch = (who.brow_arch + 0.02 * ex.brow_arch) * np.sin(math.pi * t**0.8)
        y = base - 0.045 * ex.brow_inner * (1 - t) ** 1.5 - arch
        half = who.brow_thickness * (1.0 - 0.55 * t) / 2
        shape = tex.to_px(
            np.concatenate([u, u[::-1]]), np.concatenate([y - half, (y + half)[::-1]])
        )
        tex.paint([shape], who.brow, blur=0.003)
    return base


def _paint_eyes(tex: _Texture, who: Identity, ex: Expression, gaze: tuple[float, float]) -> None:
    t = _curve(21)
    for s in (-1, 1):
        cu = s * who.eye_spacing
        u = cu + who.eye_width * t
        upper = who.eye_y - who.eye_height * ex.eye_open * (1 - t**2) ** 0.7
        lower_h = who.eye_height * 0.6 * max(0.15, 1 - 0.6 * ex.lower_lid)
        lower = who.eye_y + lower_h * (1 - t**2) ** 0.9
        # Eye socket: a soft shadow around the eye.
        su = cu + who.eye_width * 1.5 * t
        sy = who.eye_y - 0.005
        socket = tex.to_px(
            np.concatenate([su, su[::-1]]),
            np.concatenate([sy - 0.045 * (1 - t**2) ** 0.5, (sy + 0.03 * (1 - t**2) ** 0.5)[::-1]]),
        )
        tex.paint([socket], 0.85, blur=0.012, multiply=True)
        eye = tex.to_px(np.concatenate([u, u[::-1]]), np.concatenate([upper, lower[::-1]]))
        opening = tex.paint([eye], 0.82 * min(1.0, 0.4 + who.skin))
        # Iris and pupil, clipped by the lids.
        radius = who.eye_height * 0.95
        ang = np.linspace(0, 2 * math.pi, 24)
        iu = cu + gaze[0] * who.eye_width + radius / tex.head_width * np.cos(ang)
        iy = who.eye_y - 0.15 * who.eye_height + gaze[1] * who.eye_height + radius * np.sin(ang)
        tex.paint([tex.to_px(iu, iy)], who.iris, clip=opening)
        pu = cu + gaze[0] * who.eye_width + 0.45 * radius / tex.head_width * np.cos(ang)
        py = iy.mean() + 0.45 * radius * np.sin(ang)
        tex.paint([tex.to_px(pu, py)], 0.04, clip=opening)
        # Upper lid line with lashes, faint lower lid, lid crease.
        tex.paint([tex.to_px(u, upper)], 0.08, line=0.007, blur=0.002)
        tex.paint([tex.to_px(u, lower)], 0.7, line=0.003, multiply=True)
        crease = who.eye_y - who.eye_height * (0.6 + 0.9 * min(ex.eye_open, 1.2)) * (1 - t**2)
        tex.paint([tex.to_px(u * 0.95 + cu * 0.05, crease)], 0.8, line=0.004, multiply=True)


def _mouth_edges(who: Identity, ex: Expression) -> dict[str, np.ndarray]:
    my = who.eye_y + who.nose_length + who.mouth_gap + 0.02 * ex.jaw_drop
    width = who.mouth_width * ex.mouth_width * (1 - 0.2 * ex.mouth_round)
    t = _curve(31)
    u = width * t
    mid = my - 0.055 * ex.mouth_curve * t**2 + 0.01 * ex.mouth_curve
    shape = (1 - t**2) ** (1.0 - 0.5 * min(1.0, ex.mouth_round))
    opening = 0.055 * ex.mouth_open
    raise_ = 0.028 * ex.upper_lip * (1 - t**2) * (1 + 0.35 * t)  # lifted, a bit lopsided
    upper_in = mid - opening * 0.3 * shape - raise_
    lower_in = mid + opening * 0.7 * shape
    press = 1 - 0.7 * min(1.0, ex.lip_press)
    lip = who.lip_thickness * press
    bow = 0.3 * lip * np.exp(-((t / 0.12) ** 2))  # cupid's bow dip
    upper_out = upper_in - lip * (0.5 + 0.5 * (1 - t**2)) + bow
    lower_out = lower_in + lip * 1.2 * (0.3 + 0.7 * np.sqrt(1 - t**2))
    return {
        "u": u,
        "mid": mid,
        "upper_in": upper_in,
        "lower_in": lower_in,
        "upper_out": upper_out,
        "lower_out": lower_out,
    }


def _paint_mouth(tex: _Texture, who: Identity, ex: Expression) -> None:
    m = _mouth_edges(who, ex)
    u = m["u"]
    lips = tex.to_px(
        np.concatenate([u, u[::-1]]), np.concatenate([m["upper_out"], m["lower_out"][::-1]])
    )
    tex.paint([lips], who.lip, blur=0.003, multiply=True)
    gap = m["lower_in"] - m["upper_in"]
    if gap.max() > 0.004:
        hole = tex.to_px(
            np.concatenate([u, u[::-1]]), np.concatenate([m["upper_in"], m["lower_in"][::-1]])
        )
        inside = tex.paint([hole], 0.07)
        if ex.teeth > 0:
            edge = m["upper_in"] + gap * min(0.85, 0.6 * ex.teeth + 0.1)
            teeth = tex.to_px(
                np.concatenate([u * 0.9, u[::-1] * 0.9]),
                np.concatenate([m["upper_in"] - 0.01, edge[::-1]]),
            )
            tex.paint([teeth], 0.85, clip=inside)
    tex.paint([tex.to_px(u, m["mid"])], 0.25, line=0.004, blur=0.002, multiply=True)


def _paint_lines(tex: _Texture, who: Identity, ex: Expression, brow_y: float) -> None:
    tip = who.eye_y + who.nose_length
    m = _mouth_edges(who, ex)
    corner_u, corner_y = float(m["u"][-1]), float(m["mid"][-1])
    # Nostrils and the wings of the nose.
    ang = np.linspace(0, 2 * math.pi, 16)
    for s in (-1, 1):
        nu = s * who.nose_width * 0.5 + 0.035 * np.cos(ang)
        ny = tip + 0.008 + 0.008 * np.sin(ang)
        tex.paint([tex.to_px(nu, ny)], 0.35, blur=0.002, multiply=True)
        wing_t = np.linspace(0, 1, 10)
        wu = s * who.nose_width * (0.75 + 0.25 * np.sin(math.pi * wing_t))
        wy = tip - 0.03 + 0.035 * wing_t
        tex.paint([tex.to_px(wu, wy)], 0.8, line=0.004, blur=0.003, multiply=True)
        # Nasolabial fold: nose wing to beyond the mouth corner.
        depth = 0.93 - 0.28 * min(1.0, ex.cheek + 0.5 * ex.nose_wrinkle)
        ft = np.linspace(0, 1, 12)
        fu = s * (who.nose_width * 1.05 + (abs(corner_u) + 0.06 - who.nose_width * 1.05) * ft**0.8)
        fy = tip - 0.01 + (corner_y + 0.02 - tip + 0.01) * ft
        tex.paint([tex.to_px(fu, fy)], depth, line=0.006, blur=0.004, multiply=True)
    wu = np.linspace(-0.1, 0.1, 8)
    if ex.nose_wrinkle > 0.05:
        for k in range(3):
            wy = who.eye_y + 0.01 + 0.015 * k + 0.006 * (wu / 0.1) ** 2
            tex.paint(
                [tex.to_px(wu, wy)], 1 - 0.35 * min(1.0, ex.nose_wrinkle), line=0.004, multiply=True
            )
    if ex.frown_lines > 0.05:
        for s in (-1, 1):
            fu = np.full(6, s * 0.05)
            fy = np.linspace(brow_y - 0.02, brow_y + 0.03, 6)
            tex.paint(
                [tex.to_px(fu, fy)], 1 - 0.4 * min(1.0, ex.frown_lines), line=0.005, multiply=True
            )
    if ex.forehead > 0.05:
        fu = np.linspace(-0.45, 0.45, 15)
        for k in range(3):
            fy = brow_y - 0.04 - 0.025 * k + 0.01 * (fu / 0.45) ** 2
            if fy.min() > who.hair_line + 0.01:
                tex.paint(
                    [tex.to_px(fu, fy)], 1 - 0.3 * min(1.0, ex.forehead), line=0.004, multiply=True
                )
    if who.stubble:  # beard shadow around the mouth, chin and jaw
        ang = np.linspace(0, math.pi, 30)
        chin = who.head_y + who.head_bottom
        su = 0.8 * np.cos(ang)
        upper = tip + 0.02 + 0.08 * (su / 0.8) ** 4
        lower = chin - 0.01 - 0.1 * (su / 0.8) ** 2
        shape = tex.to_px(np.concatenate([su, su[::-1]]), np.concatenate([upper, lower[::-1]]))
        tex.paint([shape], 1 - 0.35 * who.stubble, blur=0.02, multiply=True)


def _paint_ears(tex: _Texture, who: Identity) -> None:
    ang = np.linspace(0, 2 * math.pi, 24)
    top, bottom = who.eye_y - 0.03, who.eye_y + who.nose_length + 0.01
    cy, hy = (top + bottom) / 2, (bottom - top) / 2
    for s in (-1, 1):
        centre = s * (math.pi / 2 + 0.12)
        outline = tex.phi_to_px(centre + 0.2 * np.cos(ang), cy + hy * np.sin(ang))
        tex.paint([outline], 0.88, blur=0.003, multiply=True)
        tex.paint([outline], 0.6, line=0.006, blur=0.002, multiply=True)
        bowl = tex.phi_to_px(centre + 0.1 * np.cos(ang), cy + 0.1 * hy + 0.55 * hy * np.sin(ang))
        tex.paint([bowl], 0.7, blur=0.004, multiply=True)


def _texture(who: Identity, ex: Expression, scene: Scene, rows: int) -> _Texture:
    tex = _Texture(rows, who.head_width * scene.scale, who.skin)
    _paint_ears(tex, who)
    brow_y = _paint_brows(tex, who, ex)
    _paint_eyes(tex, who, ex, scene.gaze)
    _paint_lines(tex, who, ex, brow_y)
    _paint_mouth(tex, who, ex)
    _paint_hair(tex, who)
    return tex


# -- geometry: ray-cast each pixel onto the rotated head ------------------------------------


def _half_width(who: Identity, y: np.ndarray, cy: float, scale: float) -> np.ndarray:
    """Head half-width at image heights `y`: an ellipse above the centre, a superellipse
    (exponent `jaw`) below it."""
    t = y - cy
    top = np.clip(1 - (t / (who.head_top * scale)) ** 2, 0, 1) ** 0.5
    s = np.clip(t / (who.head_bottom * scale), 0, 1)
    bottom = np.clip(1 - s**who.jaw, 0, 1) ** (1 / who.jaw)
    return who.head_width * scale * np.where(t < 0, top, bottom)


def _bump(who: Identity, ex: Expression, phi: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Height above the head surface (in head half-widths): nose and cheeks."""
    u = np.sin(np.clip(phi, -math.pi / 2, math.pi / 2)) * (np.abs(phi) < math.pi / 2)
    root, tip = who.eye_y - 0.01, who.eye_y + who.nose_length
    along = np.clip((y - root) / (tip - root), 0, None)
    profile = np.where(along <= 1, 0.35 + 0.65 * along**1.3, np.exp(-(((along - 1) / 0.18) ** 2)))
    profile = np.where(y < root, np.exp(-(((y - root) / 0.02) ** 2)) * 0.35, profile)
    width = (0.5 + 0.5 * np.clip(along, 0, 1)) * who.nose_width * 0.8
    nose = who.nose_height * profile * np.exp(-((u / width) ** 2))
    cheek_y = who.eye_y + 0.06 - 0.02 * ex.cheek
    cheek = (0.05 + 0.06 * ex.cheek) * np.exp(
        -(((np.abs(u) - 0.5) / 0.22) ** 2) - ((y - cheek_y) / 0.06) ** 2
    )
    return nose + cheek


def _render_float(who: Identity, ex: Expression, yaw: float, scene: Scene, side: int) -> np.ndarray:
    """Radiance, roughly in [0, 1], of a `side` x `side` image."""
    theta = math.radians(yaw)
    ct, st = math.cos(theta), math.sin(theta)
    coords = (np.arange(side, dtype=np.float64) + 0.5) / side
    cx, cy = 0.5 + scene.shift[0], who.head_y + scene.shift[1]
    a_row = _half_width(who, coords, cy, scene.scale)
    da_row = np.gradient(a_row, coords)
    yy, xx = np.meshgrid(coords, coords - cx, indexing="ij")

    gx, gy = scene.background_gradient
    out = scene.background + gx * (xx + cx - 0.5) + gy * (yy - 0.5)
    # Neck: below the head, in the chin's shadow.
    neck = (yy > cy) & (
        np.abs(xx - 0.3 * who.head_width * st) < 0.55 * who.head_width * scene.scale
    )
    out[neck] = who.skin * 0.8 * (scene.ambient + 0.4 * scene.diffuse)

    # Ray-cast only the pixels inside the head's silhouette (flat arrays from here on).
    a_full = np.broadcast_to(a_row[:, None], (side, side))
    silhouette = np.hypot(a_full * ct, a_full * who.depth * st)
    inside = (np.abs(xx) < silhouette) & (a_full > 1e-4)
    rows_i = np.nonzero(inside)[0]
    x, y, a = xx[inside], yy[inside], a_row[rows_i]
    c = a * who.depth

    def front_angle(extra: np.ndarray | float) -> np.ndarray:
        ra, rc = a * (1 + extra), c + a * extra
        radius = np.hypot(ra * ct, rc * st)
        alpha = np.arctan2(rc * st, ra * ct)
        return np.arcsin(np.clip(x / np.maximum(radius, 1e-9), -1, 1)) - alpha

    phi = front_angle(0.0)
    for _ in range(2):  # parallax: find the bumped surface point this pixel sees
        phi = front_angle(_bump(who, ex, phi, y))

    tex = _texture(who, ex, scene, side)
    albedo = _bilinear(
        tex.albedo, y * tex.rows - 0.5, (phi + math.pi) / (2 * math.pi) * tex.cols - 0.5
    )

    # Normals: elliptic cross-section, head taper, and the bump's slopes.
    nx, nz = c * np.sin(phi), a * np.cos(phi)
    norm = np.maximum(np.hypot(nx, nz), 1e-9)
    nx, nz = nx / norm, nz / norm
    eps = 0.01
    dh_dphi = (_bump(who, ex, phi + eps, y) - _bump(who, ex, phi - eps, y)) / (2 * eps)
    dh_dy = (_bump(who, ex, phi, y + eps) - _bump(who, ex, phi, y - eps)) / (2 * eps)
    nx, nz = nx - dh_dphi * nz, nz + dh_dphi * nx  # tilt along the tangent (nz, -nx)
    ny = -da_row[rows_i] - a * dh_dy
    nx, nz = nx * ct + nz * st, -nx * st + nz * ct
    norm = np.maximum(np.sqrt(nx**2 + ny**2 + nz**2), 1e-9)
    el, az = scene.light_elevation, scene.light_azimuth
    light = (math.sin(az) * math.cos(el), -math.sin(el), math.cos(az) * math.cos(el))
    lambert = np.clip((nx * light[0] + ny * light[1] + nz * light[2]) / norm, 0, 1)
    out[inside] = albedo * (scene.ambient + scene.diffuse * lambert)
    return out.astype(np.float32)


def _bilinear(img: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    h, w = img.shape
    y = np.clip(y, 0, h - 1)
    y0 = np.floor(y).astype(np.int64)
    x0 = np.floor(x).astype(np.int64)
    fy, fx = y - y0, x - x0
    y1 = np.minimum(y0 + 1, h - 1)
    x0w, x1w = x0 % w, (x0 + 1) % w
    top = img[y0, x0w] * (1 - fx) + img[y0, x1w] * fx
    bottom = img[y1, x0w] * (1 - fx) + img[y1, x1w] * fx
    return top * (1 - fy) + bottom * fy


def render(
    identity: Identity | int,
    expression: int | str | Expression = NEUTRAL,
    yaw: float = 0.0,
    size: int = 48,
    rng: np.random.Generator | None = None,
    scene: Scene | None = None,
    intensity: float = 1.0,
) -> np.ndarray:
    """One face, uint8 `[size, size]`.

    `identity` is an `Identity` or a person id; `expression` a class index, class name or
    `Expression` (blended from neutral by `intensity`); `yaw` in degrees (+ turns the face
    towards the image's right; up to about +-70 looks plausible). Without `rng` and
    `scene` the render is clean (frontal light, no noise); with `rng` a random `Scene` is
    drawn unless one is given, and noise is added if the scene has any.
    """
    who = identity if isinstance(identity, Identity) else Identity.sample(identity)
    ex = expression_of(expression, intensity)
    if scene is None:
        scene = Scene.sample(rng) if rng is not None else Scene()
    big = size * _SUPERSAMPLE
    radiance = _render_float(who, ex, yaw, scene, big)
    image = Image.fromarray(np.clip(radiance * 255, 0, 255).astype(np.uint8))
    if scene.roll:
        fill = int(np.clip(scene.background * 255, 0, 255))
        image = image.rotate(scene.roll, Image.Resampling.BILINEAR, fillcolor=fill)
    small = np.asarray(image.resize((size, size), Image.Resampling.BOX), dtype=np.float32) / 255
    small = np.clip(small, 0, 1) ** scene.gamma
    small = (small - 0.5) * scene.contrast + 0.5
    small = small * 255
    if scene.noise and rng is not None:
        small = small + rng.normal(0, scene.noise, small.shape)
    return np.clip(np.rint(small), 0, 255).astype(np.uint8)


# -- data sets ------------------------------------------------------------------------------


def _ids(identities: int | Sequence[int]) -> list[int]:
    ids = list(range(identities)) if isinstance(identities, int) else [int(i) for i in identities]
    if not ids:
        raise ValueError("need at least one identity")
    return ids


def _subject(person: int) -> str:
    return f"syn{person:05d}"


def make_dataset(
    n: int,
    size: int = 48,
    seed: int = 0,
    yaw_range: tuple[float, float] = (0.0, 0.0),
    identities: int | Sequence[int] = 32,
    classes: Sequence[int] = tuple(range(len(CLASSES))),
    intensity_range: tuple[float, float] = (0.7, 1.0),
) -> FaceSet:
    """`n` random faces, classes cycling through `classes` (balanced), labels in `CLASSES`.

    `identities`: a count K (people 0..K-1) or explicit person ids (use disjoint ids for
    held-out people). Row i depends only on (seed, i). `meta`: `subject`, `identity`,
    `neutral`, `yaw`, `intensity`, `name`.
    """
    ids = _ids(identities)
    images, labels, people, yaws, strengths = [], [], [], [], []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        label = int(classes[i % len(classes)])
        person = ids[int(rng.integers(len(ids)))]
        yaw = float(rng.uniform(*yaw_range))
        strength = float(rng.uniform(*intensity_range))
        ex = expression_of(label, strength).jitter(rng)
        images.append(render(person, ex, yaw, size, rng))
        labels.append(label)
        people.append(person)
        yaws.append(yaw)
        strengths.append(strength)
    return FaceSet(
        np.stack(images) if images else np.zeros((0, size, size), np.uint8),
        np.array(labels, dtype=np.int64),
        {
            "subject": np.array([_subject(p) for p in people], dtype=str),
            "identity": np.array(people, dtype=np.int64),
            "neutral": np.array(labels, dtype=np.int64) == NEUTRAL,
            "yaw": np.array(yaws, dtype=np.float32),
            "intensity": np.array(strengths, dtype=np.float32),
            "name": np.array([f"syn_{seed}_{i:06d}" for i in range(n)], dtype=str),
        },
    )


def make_pairs(
    n: int,
    size: int = 48,
    seed: int = 0,
    yaw_range: tuple[float, float] = (0.0, 0.0),
    identities: int | Sequence[int] = 32,
    intensity_range: tuple[float, float] = (0.7, 1.0),
) -> tuple[FaceSet, FaceSet]:
    """`n` (expressive, neutral) pairs for de-expression training: row i of both sets is
    the same person in the same scene and pose; only the expression (one of the six
    non-neutral classes, cycling) and the pixel noise differ."""
    ids = _ids(identities)
    expressive = [c for c in range(len(CLASSES)) if c != NEUTRAL]
    faces, neutrals, labels, people, yaws = [], [], [], [], []
    for i in range(n):
        rng = np.random.default_rng([seed, i, 1])
        label = expressive[i % len(expressive)]
        person = ids[int(rng.integers(len(ids)))]
        yaw = float(rng.uniform(*yaw_range))
        ex = expression_of(label, float(rng.uniform(*intensity_range))).jitter(rng)
        scene = Scene.sample(rng)
        faces.append(render(person, ex, yaw, size, rng, scene))
        neutrals.append(render(person, NEUTRAL, yaw, size, rng, scene))
        labels.append(label)
        people.append(person)
        yaws.append(yaw)
    meta = {
        "subject": np.array([_subject(p) for p in people], dtype=str),
        "identity": np.array(people, dtype=np.int64),
        "yaw": np.array(yaws, dtype=np.float32),
        "pair": np.arange(n, dtype=np.int64),
    }
    empty = np.zeros((0, size, size), np.uint8)
    return (
        FaceSet(
            np.stack(faces) if faces else empty,
            np.array(labels),
            {**meta, "neutral": np.zeros(n, bool)},
        ),
        FaceSet(
            np.stack(neutrals) if neutrals else empty,
            np.full(n, NEUTRAL),
            {**meta, "neutral": np.ones(n, bool)},
        ),
    )


def make_multi_yaw(
    n: int,
    yaws: Sequence[float] = DEFAULT_YAWS,
    size: int = 48,
    seed: int = 0,
    identities: int | Sequence[int] = 32,
    classes: Sequence[int] = tuple(range(len(CLASSES))),
    intensity_range: tuple[float, float] = (0.7, 1.0),
) -> FaceSet:
    """`n` groups, each one person with one expression in one scene rendered at every yaw
    in `yaws` (rows grouped: group g is rows g*len(yaws) ...). For frontalization pairs,
    `meta['frontal_index']` is the row of the group's yaw-0 face (-1 if 0 is not in
    `yaws`); other columns: `group`, `subject`, `identity`, `yaw`, `neutral`."""
    ids = _ids(identities)
    yaws = [float(v) for v in yaws]
    frontal = yaws.index(0.0) if 0.0 in yaws else -1
    images, labels, people, groups, yaw_col, frontal_col = [], [], [], [], [], []
    for g in range(n):
        rng = np.random.default_rng([seed, g, 2])
        label = int(classes[g % len(classes)])
        person = ids[int(rng.integers(len(ids)))]
        ex = expression_of(label, float(rng.uniform(*intensity_range))).jitter(rng)
        scene = Scene.sample(rng)
        for yaw in yaws:
            images.append(render(person, ex, yaw, size, rng, scene))
            labels.append(label)
            people.append(person)
            groups.append(g)
            yaw_col.append(yaw)
            frontal_col.append(g * len(yaws) + frontal if frontal >= 0 else -1)
    return FaceSet(
        np.stack(images) if images else np.zeros((0, size, size), np.uint8),
        np.array(labels, dtype=np.int64),
        {
            "group": np.array(groups, dtype=np.int64),
            "subject": np.array([_subject(p) for p in people], dtype=str),
            "identity": np.array(people, dtype=np.int64),
            "yaw": np.array(yaw_col, dtype=np.float32),
            "frontal_index": np.array(frontal_col, dtype=np.int64),
            "neutral": np.array(labels, dtype=np.int64) == NEUTRAL,
        },
    )


def write_ckplus_npz(path: str | Path, faces: FaceSet) -> None:
    """For smoke runs of the CK+ commands: a CK+-shaped npz of synthetic faces. Per subject
    one sequence, its first image as the neutral frame (`hugoiwnl`) and the others as CK+48
    peak frames; the subject's last digit modulo 3 is its fold."""
    subject = faces.meta["subject"].astype(str)
    first = {s: int(np.flatnonzero(subject == s)[0]) for s in np.unique(subject)}
    first_row = np.array([first[s] for s in subject])
    neutral = first_row == np.arange(len(subject))
    fer = np.where(neutral, CLASSES.index("neutral"), faces.labels)
    codes = np.array([1, 3, 4, 5, 6, 7, 0])[fer]  # FER2013 class -> CK+ code
    sequence = np.array([f"{s}_001" for s in subject])
    np.savez(
        path,
        images=faces.images,
        labels=codes.astype(np.int8),
        fer_labels=fer.astype(np.int8),
        subject=subject,
        sequence=sequence,
        frame=np.where(neutral, 1, 10 + np.arange(len(subject))).astype(np.int16),
        neutral=neutral,
        source=np.where(neutral, "hugoiwnl", "CK+48"),
        names=np.array([f"{q}_{i:08d}" for i, q in enumerate(sequence)]),
        neutral_index=np.where(neutral, -1, first_row).astype(np.int32),
        labeled_sequence=np.ones(len(subject), bool),
        fold=np.array([int(s[-1]) % 3 for s in subject], dtype=np.int8),
    )
