"""Dataset readers: FER2013 csv/npz, the CK+ npz (labels, protocol, pairs, folds) and image
folders. Every fixture is written here; no shared data set is read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.__main__ import load_dataset
from training.data import ckplus
from training.data.fer2013 import load_csv, load_npz
from training.data.folder import load_folder
from training.data.samples import CLASSES, FaceSet

# -- FER2013 ---------------------------------------------------------------------------------


def _pixels(values: np.ndarray) -> str:
    return " ".join(str(int(v)) for v in values.ravel())


def test_load_csv_reads_every_split_and_filters(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 48, 48), dtype=np.uint8)
    usages = ["Training", "Training", "PublicTest", "PrivateTest", "Training"]
    labels = [3, 0, 6, 5, 2]
    lines = ["emotion,pixels,Usage"]
    lines += [f"{y},{_pixels(im)},{u}" for y, im, u in zip(labels, images, usages, strict=True)]
    path = tmp_path / "fer2013.csv"
    path.write_text("\n".join(lines) + "\n")

    everything = load_csv(path)
    assert everything.images.shape == (5, 48, 48) and everything.images.dtype == np.uint8
    assert np.array_equal(everything.images, images)
    assert everything.labels.tolist() == labels
    assert everything.meta["usage"].tolist() == usages

    train = load_csv(path, "train")
    assert train.labels.tolist() == [3, 0, 2]
    assert np.array_equal(train.images, images[[0, 1, 4]])
    assert load_csv(path, "public_test").labels.tolist() == [6]
    assert load_csv(path, "PrivateTest").labels.tolist() == [5]
    assert load_dataset(str(path), "train").labels.tolist() == [3, 0, 2]


def test_load_csv_rejects_bad_files(tmp_path: Path) -> None:
    bad_side = tmp_path / "side.csv"
    bad_side.write_text("emotion,pixels,Usage\n1," + " ".join(["7"] * 10) + ",Training\n")
    with pytest.raises(ValueError, match="square"):
        load_csv(bad_side)
    no_pixels = tmp_path / "cols.csv"
    no_pixels.write_text("emotion,Usage\n1,Training\n")
    with pytest.raises(ValueError, match="pixels"):
        load_csv(no_pixels)
    square = tmp_path / "ok.csv"
    square.write_text("emotion,pixels,Usage\n1," + " ".join(["7"] * 16) + ",Training\n")
    with pytest.raises(ValueError, match="no rows"):
        load_csv(square, "public_test")
    assert load_csv(square).images.shape == (1, 4, 4)


def test_load_npz_keeps_per_image_columns(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (4, 48, 48, 1), dtype=np.uint8)
    path = tmp_path / "train.npz"
    np.savez(
        path,
        images=images,
        labels=np.array([0, 6, 3, -1]),
        names=np.array(["a", "b", "c", "d"]),
        classes=np.array(CLASSES),  # not per image: dropped
    )
    data = load_npz(path)
    assert data.images.shape == (4, 48, 48)
    assert np.array_equal(data.images, images[..., 0])
    assert data.labels.tolist() == [0, 6, 3, -1]
    assert data.meta["name"].tolist() == ["a", "b", "c", "d"]
    assert "classes" not in data.meta
    assert data.class_counts().tolist() == [1, 0, 0, 1, 0, 0, 1]
    assert [s.name for s in data] == ["a", "b", "c", "d"]


def test_load_npz_rejects_bad_labels_and_missing_arrays(tmp_path: Path) -> None:
    np.savez(tmp_path / "bad.npz", images=np.zeros((2, 8, 8), np.uint8), labels=np.array([0, 7]))
    with pytest.raises(ValueError, match="labels outside"):
        load_npz(tmp_path / "bad.npz")
    np.savez(tmp_path / "nolabels.npz", images=np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="labels"):
        load_npz(tmp_path / "nolabels.npz")


# -- CK+ -------------------------------------------------------------------------------------

CK_NAMES = ["neutral", "anger", "contempt", "disgust", "fear", "happy", "sadness", "surprise"]
#: The mapping written out independently of the reader: CK+ code -> FER2013 index.
CK_TO_FER = {0: 6, 1: 0, 2: -1, 3: 1, 4: 2, 5: 3, 6: 4, 7: 5}

# (sequence, CK+ code of the labelled peak or None, has a neutral first frame,
#  has a `hugoiwnl` peak). Shaped like the real file: an unlabelled sequence with only its
# neutral frame, a contempt sequence, a labelled sequence without neutral frame, and a
# labelled sequence that only CK+48 has.
SEQUENCES = [
    ("S005_001", 1, True, True),
    ("S005_002", None, True, False),
    ("S010_001", 5, True, True),
    ("S010_002", 2, True, True),
    ("S010_003", 7, False, True),
    ("S011_001", 6, True, True),
    ("S011_002", 3, True, False),
    ("S014_001", 4, True, True),
    ("S014_002", None, True, False),
    ("S022_001", 5, True, True),
    ("S026_001", 7, True, True),
]
SUBJECTS = sorted({s[:4] for s, *_ in SEQUENCES})
N_FOLDS = 3


def _write_ckplus(path: Path) -> dict[str, np.ndarray]:
    """A small npz with the layout of the shared CK+ file (see its README)."""
    last = {seq: 10 + i for i, (seq, *_) in enumerate(SEQUENCES)}
    rows: list[tuple[str, str, int, int]] = []  # (source, sequence, frame, CK+ code)
    rows += [("hugoiwnl", s, 1, 0) for s, _, neutral, _ in SEQUENCES if neutral]
    rows += [("hugoiwnl", s, last[s], c) for s, c, _, hug in SEQUENCES if c is not None and hug]
    rows += [
        ("CK+48", s, last[s] - k, c) for s, c, _, _ in SEQUENCES if c is not None for k in (2, 1, 0)
    ]
    names = [f"{seq}_{frame:08d}" for _, seq, frame, _ in rows]
    sequence = np.array([seq for _, seq, _, _ in rows])
    neutral = np.array([frame == 1 for _, _, frame, _ in rows])
    first = {seq: i for i, seq in enumerate(sequence) if neutral[i]}
    codes = np.array([c for *_, c in rows], dtype=np.int8)
    subject = np.array([s[:4] for s in sequence])
    labelled = {s for s, c, *_ in SEQUENCES if c is not None}
    arrays = {
        "images": np.random.default_rng(2).integers(0, 256, (len(rows), 48, 48), dtype=np.uint8),
        "labels": codes,
        "label_names": np.array(CK_NAMES),
        "fer_labels": np.array([CK_TO_FER[int(c)] for c in codes], dtype=np.int8),
        "subject": subject,
        "sequence": sequence,
        "frame": np.array([f for _, _, f, _ in rows], dtype=np.int16),
        "neutral": neutral,
        "source": np.array([src for src, *_ in rows]),
        "names": np.array(names),
        "neutral_index": np.array(
            [-1 if neutral[i] else first.get(s, -1) for i, s in enumerate(sequence)],
            dtype=np.int32,
        ),
        "labeled_sequence": np.array([s in labelled for s in sequence]),
        "fold": np.array([SUBJECTS.index(s) % N_FOLDS for s in subject], dtype=np.int8),
    }
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return arrays


@pytest.fixture
def ck(tmp_path: Path) -> tuple[FaceSet, dict[str, np.ndarray]]:
    arrays = _write_ckplus(tmp_path / "ckplus.npz")
    return ckplus.load_ckplus(tmp_path / "ckplus.npz"), arrays


def test_ckplus_labels_are_mapped_to_fer2013(ck) -> None:
    data, raw = ck
    # 10 neutral frames + 8 hugoiwnl peaks + 9 labelled sequences x 3 CK+48 frames
    assert len(data) == 45 and data.images.shape == (45, 48, 48)
    assert np.array_equal(data.images, raw["images"])
    expected = [CK_TO_FER[int(c)] for c in raw["labels"]]
    assert data.labels.tolist() == expected
    assert [CLASSES[y] for y in data.labels[data.meta["neutral"]]] == ["neutral"] * 10
    # anger -> angry, sadness -> sad, surprise -> surprise, happy -> happy, contempt -> -1
    by_code = {int(c): int(y) for c, y in zip(raw["labels"], data.labels, strict=True)}
    assert CLASSES[by_code[1]] == "angry" and CLASSES[by_code[6]] == "sad"
    assert CLASSES[by_code[7]] == "surprise" and CLASSES[by_code[3]] == "disgust"
    assert by_code[2] == -1
    assert data.meta["row"].tolist() == list(range(45))
    for key in ("subject", "sequence", "frame", "neutral", "fold", "source", "name"):
        assert key in data.meta
    sample = data[0]
    assert sample.neutral and sample.frame == 1 and sample.subject == "S005"


def test_ckplus_rejects_other_files_and_inconsistent_codes(tmp_path: Path) -> None:
    np.savez(tmp_path / "fer.npz", images=np.zeros((2, 48, 48), np.uint8), labels=np.zeros(2))
    with pytest.raises(ValueError, match="not a CK\\+ npz"):
        ckplus.load_ckplus(tmp_path / "fer.npz")
    arrays = _write_ckplus(tmp_path / "ok.npz")
    arrays["fer_labels"] = arrays["labels"]  # CK+ codes where FER2013 codes belong
    np.savez(tmp_path / "bad.npz", **arrays)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="disagree"):
        ckplus.load_ckplus(tmp_path / "bad.npz")


def test_seven_class_view_drops_only_contempt(ck) -> None:
    data, _ = ck
    seven = ckplus.without_contempt(data)
    assert len(seven) == 45 - 4  # S010_002: one hugoiwnl peak + 3 CK+48 frames
    assert seven.labels.min() >= 0
    assert "contempt" not in {CK_NAMES[c] for c in seven.meta["ck_label"]}
    # The neutral first frame of the contempt sequence is a neutral face and stays.
    assert "S010_002" in set(seven.meta["sequence"][seven.meta["neutral"]])
    assert seven.class_counts().sum() == len(seven)


def test_tdgan_protocol_takes_ckplus48_peaks_and_their_neutral_frames(ck) -> None:
    data, _ = ck
    protocol = ckplus.tdgan_protocol(data)
    peaks = ~protocol.meta["neutral"]
    # 8 non-contempt labelled sequences x 3 frames; 7 of them have a neutral frame.
    assert int(peaks.sum()) == 24 and int((~peaks).sum()) == 7
    assert set(protocol.meta["source"][peaks]) == {"CK+48"}
    assert set(protocol.meta["source"][~peaks]) == {"hugoiwnl"}
    assert "S005_002" not in set(protocol.meta["sequence"])  # unlabelled sequence
    assert "S010_002" not in set(protocol.meta["sequence"])  # contempt
    assert protocol.labels.min() >= 0
    assert protocol.class_counts().tolist() == [3, 3, 3, 6, 3, 6, 7]


def test_pairs_are_same_sequence_and_survive_subsetting(ck) -> None:
    data, raw = ck
    pairs = ckplus.pairs(data)
    # every expressive row except the 4 of S010_003, which has no neutral frame
    assert len(pairs) == (8 + 27) - 4
    seq = data.meta["sequence"]
    assert np.array_equal(seq[pairs[:, 0]], seq[pairs[:, 1]])
    assert data.meta["neutral"][pairs[:, 1]].all() and not data.meta["neutral"][pairs[:, 0]].any()

    # In a subset, pairs index the subset, and the images are the file's own pairs.
    subset = data.subset(np.flatnonzero(data.meta["fold"] != 1)[::-1])
    sub_pairs = ckplus.pairs(subset)
    assert len(sub_pairs) > 0
    for e, n in sub_pairs:
        row_e, row_n = subset.meta["row"][e], subset.meta["row"][n]
        assert raw["neutral_index"][row_e] == row_n
        assert np.array_equal(subset.images[n], raw["images"][row_n])

    # Pairs whose neutral frame is not in the set are skipped, not mis-indexed.
    peaks_only = data.subset(~data.meta["neutral"])
    assert len(ckplus.pairs(peaks_only)) == 0
    assert (ckplus.neutral_positions(peaks_only) == -1).all()
    assert len(ckplus.pairs(ckplus.tdgan_protocol(data))) == 24 - 3


def test_cross_sequence_pairs_stay_within_the_subject(ck) -> None:
    data, _ = ck
    same = ckplus.pairs(data)
    both = ckplus.pairs(data, cross_sequence=True)
    subject, seq = data.meta["subject"], data.meta["sequence"]
    assert np.array_equal(subject[both[:, 0]], subject[both[:, 1]])
    cross = both[seq[both[:, 0]] != seq[both[:, 1]]]
    # S005: 4 rows x 1 other neutral; S010: 4 + 4 + 4 x 2; S011: 4 + 3; S014: 4 x 1
    assert len(cross) == 4 + 16 + 7 + 4
    assert len(both) == len(same) + len(cross)
    assert {tuple(p) for p in same} <= {tuple(p) for p in both}
    # S010_003 has no neutral frame of its own but gets the subject's other two.
    s010_003 = np.flatnonzero(seq == "S010_003")
    assert set(seq[both[np.isin(both[:, 0], s010_003), 1]]) == {"S010_001", "S010_002"}


def test_folds_are_subject_disjoint_and_cover_every_row(ck) -> None:
    data, _ = ck
    seen = []
    for k in range(N_FOLDS):
        train, test = ckplus.folds(data, k)
        assert len(test) > 0 and len(train) > 0
        assert not set(data.meta["subject"][train]) & set(data.meta["subject"][test])
        assert (data.meta["fold"][test] == k).all()
        assert sorted(np.concatenate([train, test]).tolist()) == list(range(len(data)))
        seen += test.tolist()
    assert sorted(seen) == list(range(len(data)))
    with pytest.raises(ValueError, match="fold 5"):
        ckplus.folds(data, 5)


# -- image folders ---------------------------------------------------------------------------


def test_load_folder_reads_classes_aliases_and_formats(tmp_path: Path) -> None:
    root = tmp_path / "faces"
    for folder in ("happy", "Anger", "sadness", "surprised", "neutral", "contempt"):
        (root / folder).mkdir(parents=True)
    Image.new("RGB", (64, 64), (255, 0, 0)).save(root / "happy" / "a.png")
    Image.new("L", (60, 80), 200).save(root / "Anger" / "b.JPG")  # portrait, upper case ext
    Image.new("L", (48, 48), 10).save(root / "sadness" / "c.bmp")
    Image.new("RGBA", (30, 30), (0, 0, 255, 255)).save(root / "surprised" / "d.png")
    Image.new("L", (48, 48), 99).save(root / "neutral" / "e.jpeg")
    Image.new("L", (48, 48), 99).save(root / "neutral" / ".hidden.png")
    (root / "neutral" / "notes.txt").write_text("not an image")
    Image.new("L", (48, 48), 1).save(root / "contempt" / "f.png")  # not a FER2013 class
    (root / "README.md").write_text("ignored")

    data = load_folder(root)
    assert data.images.shape == (5, 48, 48) and data.images.dtype == np.uint8
    names = data.meta["name"].tolist()
    assert names == [
        "Anger/b.JPG",
        "happy/a.png",
        "neutral/e.jpeg",
        "sadness/c.bmp",
        "surprised/d.png",
    ]
    assert [CLASSES[y] for y in data.labels] == ["angry", "happy", "neutral", "sad", "surprise"]
    means = data.images.reshape(5, -1).mean(1)
    assert abs(means[1] - 76) <= 1  # pure red in ITU-R 601 luma
    assert abs(means[4] - 29) <= 1  # pure blue
    assert abs(means[0] - 200) <= 3 and abs(means[3] - 10) <= 1

    small = load_folder(root, size=32)
    assert small.images.shape == (5, 32, 32)
    assert load_dataset(str(root)).labels.tolist() == data.labels.tolist()


def test_load_folder_keeps_the_central_square(tmp_path: Path) -> None:
    root = tmp_path / "faces"
    (root / "fear").mkdir(parents=True)
    wide = np.zeros((40, 120), np.uint8)
    wide[:, 40:80] = 255  # only the central square is white
    Image.fromarray(wide).save(root / "fear" / "wide.png")
    data = load_folder(root, size=40)
    assert data.labels.tolist() == [CLASSES.index("fear")]
    assert data.images[0].min() >= 250  # no black side bands: the face was not squashed


def test_load_folder_needs_images(tmp_path: Path) -> None:
    (tmp_path / "happy").mkdir()
    (tmp_path / "other").mkdir()
    Image.new("L", (8, 8)).save(tmp_path / "other" / "x.png")
    with pytest.raises(ValueError, match="no images"):
        load_folder(tmp_path)
    with pytest.raises(ValueError, match="not a directory"):
        load_folder(tmp_path / "missing")
