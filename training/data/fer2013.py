"""FER2013 readers: the shared `.npz` bundles and the original Kaggle `fer2013.csv`."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from training.data.bundle import load_arrays
from training.data.samples import CLASSES, FaceSet

#: `Usage` values of fer2013.csv, by the split names this project uses.
CSV_SPLITS = {"train": "Training", "public_test": "PublicTest", "private_test": "PrivateTest"}


def load_npz(path: str | Path) -> FaceSet:
    """Read any npz (plain or a bundle) with `images` (uint8 [N,H,W]) and `labels` in
    FER2013 class order.

    Extra per-image arrays (`names`, `subject`, ...) become `meta` columns.
    """
    z = load_arrays(path)
    if "images" not in z or "labels" not in z:
        raise ValueError(f"{path}: needs arrays 'images' and 'labels', has {list(z)}")
    images = z["images"]
    labels = z["labels"].astype(np.int64)
    meta = {
        ("name" if k == "names" else k): v
        for k, v in z.items()
        if k not in ("images", "labels") and v.shape[:1] == images.shape[:1]
    }
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if labels.size and (labels.min() < -1 or labels.max() >= len(CLASSES)):
        raise ValueError(f"{path}: labels outside 0..{len(CLASSES) - 1}")
    return FaceSet(images, labels, meta)


def load_csv(path: str | Path, split: str | None = None) -> FaceSet:
    """Read the original `fer2013.csv` (`emotion,pixels,Usage`), optionally one split.

    `split` is `train`, `public_test`, `private_test` or the raw `Usage` value.
    """
    usage = CSV_SPLITS.get(split, split) if split else None
    images: list[np.ndarray] = []
    labels: list[int] = []
    usages: list[str] = []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"emotion", "pixels"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: missing columns {sorted(missing)}")
        for row in reader:
            row_usage = row.get("Usage", "")
            if usage and row_usage != usage:
                continue
            pixels = np.array(row["pixels"].split(), dtype=np.uint8)
            side = int(round(len(pixels) ** 0.5))
            if side * side != len(pixels):
                raise ValueError(f"{path}: a row has {len(pixels)} pixels, not a square image")
            images.append(pixels.reshape(side, side))
            labels.append(int(row["emotion"]))
            usages.append(row_usage)
    if not images:
        raise ValueError(f"{path}: no rows" + (f" with Usage={usage}" if usage else ""))
    return FaceSet(np.stack(images), np.array(labels), {"usage": np.array(usages)})
