"""The one sample type every dataset reader yields, and a columnar set of them."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np

#: Expression classes in FER2013 order; every label in the project indexes this tuple.
CLASSES: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


@dataclass(frozen=True)
class FaceSample:
    """One grayscale face. `label` indexes `CLASSES` (-1: no usable expression label)."""

    image: np.ndarray  # uint8 [H, W]
    label: int
    subject: str = ""
    sequence: str = ""
    frame: int = 0
    neutral: bool = False
    name: str = ""


@dataclass
class FaceSet:
    """A columnar set of faces: `images` uint8 [N,H,W], `labels` int64 [N], optional columns.

    Columns in `meta` have one entry per image (e.g. `subject`, `sequence`, `frame`, `fold`,
    `neutral`, `neutral_index`, `name`). Iterating yields `FaceSample`s.
    """

    images: np.ndarray
    labels: np.ndarray
    meta: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.images = np.ascontiguousarray(self.images, dtype=np.uint8)
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if self.images.ndim != 3:
            raise ValueError(f"images must be [N,H,W], got shape {self.images.shape}")
        if len(self.labels) != len(self.images):
            raise ValueError("images and labels differ in length")
        for key, col in self.meta.items():
            if len(col) != len(self.images):
                raise ValueError(f"column {key!r} has {len(col)} rows, expected {len(self.images)}")

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> FaceSample:
        m = self.meta
        return FaceSample(
            image=self.images[i],
            label=int(self.labels[i]),
            subject=str(m["subject"][i]) if "subject" in m else "",
            sequence=str(m["sequence"][i]) if "sequence" in m else "",
            frame=int(m["frame"][i]) if "frame" in m else 0,
            neutral=bool(m["neutral"][i]) if "neutral" in m else False,
            name=str(m["name"][i]) if "name" in m else "",
        )

    def __iter__(self) -> Iterator[FaceSample]:
        return (self[i] for i in range(len(self)))

    def subset(self, index: np.ndarray) -> FaceSet:
        """Rows selected by a boolean mask or integer index (integer columns are remapped
        only by the caller; `neutral_index` refers to the parent set's rows)."""
        return FaceSet(
            self.images[index], self.labels[index], {k: v[index] for k, v in self.meta.items()}
        )

    def class_counts(self, num_classes: int = len(CLASSES)) -> np.ndarray:
        """Images per class (labels < 0 are not counted)."""
        valid = self.labels[self.labels >= 0]
        return np.bincount(valid, minlength=num_classes)

    @classmethod
    def from_samples(cls, samples: list[FaceSample]) -> FaceSet:
        """Stack samples of equal size into a set."""
        if not samples:
            raise ValueError("no samples")
        meta: Mapping[str, list[object]] = {
            "subject": [s.subject for s in samples],
            "sequence": [s.sequence for s in samples],
            "frame": [s.frame for s in samples],
            "neutral": [s.neutral for s in samples],
            "name": [s.name for s in samples],
        }
        return cls(
            np.stack([s.image for s in samples]),
            np.array([s.label for s in samples]),
            {k: np.asarray(v) for k, v in meta.items()},
        )
