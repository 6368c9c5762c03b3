"""CK+ reader: the shared `ckplus.npz` (48x48 crops of peak and neutral first frames).

The file (see `datasets/ckplus/README.md`) mixes two crop pipelines: `hugoiwnl` (neutral
first frames of 575 sequences plus 315 last frames) and `CK+48` (the last 3 frames of the
327 emotion-labelled sequences). `load_ckplus` keeps every row with labels in FER2013
order (contempt, which FER2013 lacks, is -1) and these `meta` columns:

- `row`: the row in the file; `neutral_index` holds such row ids (or -1), so it stays
  valid in any subset (use `neutral_positions` to turn it into positions of a subset);
- `subject`, `sequence`, `frame`, `neutral`, `fold`, `source`, `name`;
- `ck_label` (the original CK+ code) and `labeled_sequence`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.data.bundle import load_arrays
from training.data.samples import FaceSet

#: CK+ emotion codes, in code order.
CK_CLASSES: tuple[str, ...] = (
    "neutral",
    "anger",
    "contempt",
    "disgust",
    "fear",
    "happy",
    "sadness",
    "surprise",
)
CONTEMPT = CK_CLASSES.index("contempt")
#: CK+ code -> FER2013 class index (`CLASSES`); contempt has none (-1).
CK_TO_FER = np.array([6, 0, -1, 1, 2, 3, 4, 5], dtype=np.int64)

#: Source names in the `source` column.
HUGOIWNL = "hugoiwnl"
CK48 = "CK+48"

_COLUMNS = ("subject", "sequence", "frame", "neutral", "fold", "source", "labeled_sequence")


def load_ckplus(path: str | Path) -> FaceSet:
    """Read every row of the CK+ npz; labels in FER2013 order, contempt = -1."""
    z = load_arrays(path)
    missing = {"images", "labels", "neutral_index", *_COLUMNS} - set(z)
    if missing:
        raise ValueError(f"{path}: not a CK+ npz, missing arrays {sorted(missing)}")
    images = z["images"]
    ck = z["labels"].astype(np.int64)
    if ck.size and (ck.min() < 0 or ck.max() >= len(CK_CLASSES)):
        raise ValueError(f"{path}: CK+ labels outside 0..{len(CK_CLASSES) - 1}")
    labels = CK_TO_FER[ck]
    # The file carries the FER2013 coding too; a disagreement means a different coding.
    if "fer_labels" in z and not np.array_equal(z["fer_labels"], labels):
        raise ValueError(f"{path}: fer_labels disagree with the CK+ code mapping")
    meta = {k: z[k] for k in _COLUMNS}
    meta["name"] = z["names"] if "names" in z else np.full(len(ck), "")
    meta["neutral_index"] = z["neutral_index"].astype(np.int64)
    meta["ck_label"] = ck
    meta["row"] = np.arange(len(ck), dtype=np.int64)
    return FaceSet(images, labels, meta)


def without_contempt(data: FaceSet) -> FaceSet:
    """The 7-class view: every row except contempt (labels all in 0..6)."""
    return data.subset(data.meta["ck_label"] != CONTEMPT)


def tdgan_protocol(data: FaceSet) -> FaceSet:
    """The 7-class CK+ protocol of TDGAN (Xie et al. 2021) and others: the 3 peak frames of
    every labelled non-contempt sequence plus the neutral first frame of the same sequences.

    With full CK+ this is 309 sequences x (3 + 1) = 1,236 images. Here the peaks come from
    the `CK+48` rows (927 = 981 - 54 contempt) and the neutral frames from the `hugoiwnl`
    rows; 9 of the 309 sequences have no neutral frame in the file (S026_002, S032_003-006,
    S068_003, S077_006, S094_004, S099_004), so the real file gives 927 + 300 = 1,227
    images. Their subjects' other neutral frames are not substituted: for S032 and S094
    the only other neutral frame is already in the set.

    Caution: every neutral image comes from a different crop pipeline than every expressive
    one, so a classifier can partly tell neutral from crop style alone.
    """
    meta = data.meta
    peaks = (meta["source"] == CK48) & (meta["ck_label"] != CONTEMPT)
    sequences = np.unique(meta["sequence"][peaks])
    neutrals = meta["neutral"] & np.isin(meta["sequence"], sequences)
    return data.subset(peaks | neutrals)


def neutral_positions(data: FaceSet) -> np.ndarray:
    """For each row, the position in `data` of its sequence's neutral frame (-1: none here)."""
    position = {int(r): i for i, r in enumerate(data.meta["row"])}
    return np.array(
        [position.get(int(t), -1) for t in data.meta["neutral_index"]], dtype=np.int64
    ).reshape(-1)


def pairs(data: FaceSet, cross_sequence: bool = False) -> np.ndarray:
    """(expressive, neutral) position pairs `[P, 2]` within `data`, same person each.

    Always: every expressive row with the neutral first frame of its own sequence (same
    session). With `cross_sequence`, also every expressive row with the same subject's
    neutral frames from their other sequences. Pairs whose neutral row is not in `data`
    are skipped; sorted by expressive then neutral position.
    """
    neutral = data.meta["neutral"].astype(bool)
    expressive = np.flatnonzero(~neutral)
    same = neutral_positions(data)[expressive]
    found: list[np.ndarray] = [np.stack([expressive[same >= 0], same[same >= 0]], 1)]
    if cross_sequence:
        subjects, sequences = data.meta["subject"], data.meta["sequence"]
        by_subject: dict[str, list[int]] = {}
        for i in np.flatnonzero(neutral):
            by_subject.setdefault(str(subjects[i]), []).append(int(i))
        extra = [
            (int(e), n)
            for e in expressive
            for n in by_subject.get(str(subjects[e]), [])
            if sequences[n] != sequences[e]
        ]
        found.append(np.array(extra, dtype=np.int64).reshape(-1, 2))
    out = np.concatenate(found).astype(np.int64)
    return out[np.lexsort((out[:, 1], out[:, 0]))]


def folds(data: FaceSet, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions (train, test) for subject-disjoint fold `k`: test is the rows of fold `k`."""
    fold = data.meta["fold"]
    if not np.any(fold == k):
        raise ValueError(f"no rows in fold {k} (folds present: {sorted(set(fold.tolist()))})")
    return np.flatnonzero(fold != k), np.flatnonzero(fold == k)
