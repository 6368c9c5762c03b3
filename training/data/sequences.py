"""Expression sequences for the frame-to-sequence model, from what exists here.

A `SequenceSet` is a pool of 48x48 frames and sequences as lists of pool positions (in
time order), each with a label (FER2013 order), a subject, a CK+ fold (-1: none) and a
source. Sources:

- `ckplus`: the real CK+ sequences of `ckplus.npz`. The file keeps only the neutral first
  frame (`hugoiwnl` crops) and the last 3 frames (`CK+48` crops) of each labelled
  sequence, so a real sequence here has 4 frames (neutral, peak-2, peak-1, peak; 300 of
  the 309 non-contempt sequences) or 3 (the 9 without a neutral frame): the onset between
  them is missing. `ckplus_neutral`: a subject's neutral first frames alone, labelled
  neutral (1 to 3 of them).
- `interpolated`: onsets made by blending a sequence's neutral frame into its peak frame
  (T frames, the blend weight rising from 0 to 1, eased in): `hugoiwnl` neutral to the
  `hugoiwnl` peak (one crop pipeline) and to the `CK+48` peak.
- `synthetic`: onsets of procedural faces (training/data/synthetic.py): one person and one
  capture, the expression's intensity rising from 0 to its peak over T frames (a neutral
  sequence stays at 0); every frame has its own sensor noise.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from training.data import ckplus, synthetic
from training.data.samples import CLASSES, FaceSet

NEUTRAL = CLASSES.index("neutral")


@dataclass
class SequenceSet:
    """Frames and the sequences made of them (see the module docstring)."""

    frames: list[np.ndarray] = field(default_factory=list)  # uint8 [S, S] each
    sequences: list[np.ndarray] = field(default_factory=list)  # pool positions, in order
    labels: list[int] = field(default_factory=list)
    subjects: list[str] = field(default_factory=list)
    folds: list[int] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    def add(
        self, frames: list[np.ndarray], label: int, subject: str, fold: int, source: str
    ) -> None:
        start = len(self.frames)
        self.frames.extend(frames)
        self.sequences.append(np.arange(start, start + len(frames)))
        self.labels.append(label)
        self.subjects.append(subject)
        self.folds.append(fold)
        self.sources.append(source)

    def __len__(self) -> int:
        return len(self.sequences)

    def pool(self) -> np.ndarray:
        """Every frame, uint8 `[M, S, S]`."""
        return np.stack(self.frames) if self.frames else np.zeros((0, 48, 48), np.uint8)

    def select(self, keep: np.ndarray) -> SequenceSet:
        """The sequences where `keep` is true (their frames only)."""
        out = SequenceSet()
        for i in np.flatnonzero(keep):
            frames = [self.frames[j] for j in self.sequences[i]]
            out.add(frames, self.labels[i], self.subjects[i], self.folds[i], self.sources[i])
        return out

    def lengths(self) -> np.ndarray:
        return np.array([len(s) for s in self.sequences], dtype=np.int64)


def _by_sequence(data: FaceSet) -> dict[str, list[int]]:
    rows: dict[str, list[int]] = defaultdict(list)
    for i, name in enumerate(data.meta["sequence"]):
        rows[str(name)].append(i)
    return rows


def ckplus_sequences(data: FaceSet, steps: int = 8, seed: int = 0) -> SequenceSet:
    """The real CK+ sequences, neutral-only sequences and interpolated onsets of `data`
    (every row of `ckplus.load_ckplus`, contempt included: its sequences are skipped)."""
    meta = data.meta
    rng = np.random.default_rng(seed)
    out = SequenceSet()
    weights = np.linspace(0.0, 1.0, steps) ** 1.5  # eased in: onsets start slowly
    for rows in _by_sequence(data).values():
        rows = sorted(rows, key=lambda i: int(meta["frame"][i]))
        subject, fold = str(meta["subject"][rows[0]]), int(meta["fold"][rows[0]])
        neutral = [i for i in rows if meta["neutral"][i]]
        peaks = [i for i in rows if not meta["neutral"][i] and data.labels[i] >= 0]
        if not peaks:
            if neutral:
                take = neutral * int(rng.integers(1, 4))
                out.add([data.images[i] for i in take], NEUTRAL, subject, fold, "ckplus_neutral")
            continue
        label = int(data.labels[peaks[-1]])
        ck48 = [i for i in peaks if meta["source"][i] == ckplus.CK48]
        own = [i for i in peaks if meta["source"][i] == ckplus.HUGOIWNL]
        real = neutral[:1] + sorted(ck48, key=lambda i: int(meta["frame"][i]))
        if len(real) >= 2:
            out.add([data.images[i] for i in real], label, subject, fold, "ckplus")
        for start in neutral[:1]:
            for end in (own[-1:] + ck48[-1:])[:2]:
                a = data.images[start].astype(np.float32)
                b = data.images[end].astype(np.float32)
                blends = [
                    np.clip(np.rint((1 - w) * a + w * b), 0, 255).astype(np.uint8) for w in weights
                ]
                out.add(blends, label, subject, fold, "interpolated")
    return out


def synthetic_sequences(
    n: int, steps: int = 8, seed: int = 0, first_identity: int = 100_000
) -> SequenceSet:
    """`n` synthetic onsets, classes cycling through all 7 (neutral included)."""
    out = SequenceSet()
    for k in range(n):
        rng = np.random.default_rng([seed, k])
        label = k % len(CLASSES)
        person = first_identity + int(rng.integers(0, 10_000))
        yaw = float(rng.uniform(-20, 20))
        scene = synthetic.Scene.sample(rng)
        peak = float(rng.uniform(0.7, 1.0)) if label != NEUTRAL else 0.0
        expression = synthetic.expression_of(label, 1.0).jitter(rng)
        frames = [
            synthetic.render(person, expression, yaw, 48, rng, scene, intensity=peak * w)
            for w in np.linspace(0.0, 1.0, steps) ** 1.5
        ]
        out.add(frames, label, f"syn{person:05d}", -1, "synthetic")
    return out


def merge(*sets: SequenceSet) -> SequenceSet:
    """The sequences of every set, in order."""
    out = SequenceSet()
    for part in sets:
        for i, seq in enumerate(part.sequences):
            frames = [part.frames[j] for j in seq]
            out.add(frames, part.labels[i], part.subjects[i], part.folds[i], part.sources[i])
    return out
