"""Image-folder reader: `root/<class>/*.png|jpg|jpeg|bmp`, one folder per expression.

Folder names are FER2013 class names or common aliases (`anger`, `happiness`, `sadness`,
`surprised`, ...), matched case-insensitively. Folders with other names (for example CK+'s
`contempt`) are skipped with a warning. Images become grayscale squares of `size` pixels.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from training.data.samples import CLASSES, FaceSet

log = logging.getLogger(__name__)

EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp"})

#: Folder name (lower case) -> class index in `CLASSES`.
ALIASES: dict[str, int] = {
    **{c: i for i, c in enumerate(CLASSES)},
    "anger": CLASSES.index("angry"),
    "disgusted": CLASSES.index("disgust"),
    "fearful": CLASSES.index("fear"),
    "happiness": CLASSES.index("happy"),
    "sadness": CLASSES.index("sad"),
    "surprised": CLASSES.index("surprise"),
}


def class_index(name: str) -> int | None:
    """The class a folder name stands for, or None if it names no FER2013 class."""
    return ALIASES.get(name.strip().lower())


def read_image(path: Path, size: int) -> np.ndarray:
    """One file as uint8 `[size, size]`: EXIF orientation applied, grayscale, the central
    square kept (so faces are not stretched), resized with antialiasing."""
    with Image.open(path) as im:
        image = ImageOps.exif_transpose(im).convert("L")
    w, h = image.size
    if w != h:
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        image = image.crop((left, top, left + side, top + side))
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(image, dtype=np.uint8)


def load_folder(root: str | Path, size: int = 48) -> FaceSet:
    """Read `root/<class>/<image>` into a `FaceSet` in sorted path order.

    `meta` has `name` (the path relative to `root`). Raises if no image is found.
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root} is not a directory")
    images: list[np.ndarray] = []
    labels: list[int] = []
    names: list[str] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        label = class_index(folder.name)
        if label is None:
            log.warning("%s: skipping folder %r (not a FER2013 class)", root, folder.name)
            continue
        files = sorted(
            p
            for p in folder.iterdir()
            if p.is_file() and p.suffix.lower() in EXTENSIONS and not p.name.startswith(".")
        )
        for path in files:
            images.append(read_image(path, size))
            labels.append(label)
            names.append(path.relative_to(root).as_posix())
    if not images:
        raise ValueError(f"{root}: no images in class folders ({', '.join(CLASSES)})")
    return FaceSet(np.stack(images), np.array(labels), {"name": np.array(names)})
