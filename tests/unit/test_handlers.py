"""The handlers of service/handlers against the archives: the shipped archives (which carry
the self-contained handler they were exported with) give exactly what the current handler
gives on their weights, so re-exporting them changes no probability; a newly exported
archive carries the shared base module and loads it from itself, not from the source tree."""

from __future__ import annotations

import base64
import io
import json
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.archive import open_archive
from service.handlers.classifier import ClassifierHandler
from service.handlers.layout import MANIFEST, METADATA_FILE, SHARED_FILES, WEIGHTS_FILE
from service.settings import DEFAULT_MODEL_STORE


def crop_rows(count: int, neutral: bool) -> list[dict[str, bytes]]:
    """Request rows of random 48x48 gray crops, as the backends send them."""
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(count):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (48, 48), dtype=np.uint8)).save(buf, format="PNG")
        body = buf.getvalue()
        if neutral:
            body = json.dumps(
                {"image": base64.b64encode(body).decode("ascii"), "neutral": True}
            ).encode()
        rows.append({"body": body})
    return rows


@pytest.mark.parametrize(("name", "neutral"), [("compact", False), ("derl", True)])
def test_shipped_archives_answer_as_the_current_handler(
    name: str, neutral: bool, tmp_path: Path
) -> None:
    shipped = open_archive(DEFAULT_MODEL_STORE / f"{name}.mar", tmp_path)
    # exported before the shared base: its handler stands alone
    assert not (Path(shipped.context.model_dir) / "base.py").exists()
    current = ClassifierHandler()
    current.load_dir(shipped.context.model_dir)
    rows = crop_rows(6, neutral)
    old = shipped.handler.handle(rows, shipped.context)
    new = current.handle(rows, shipped.context)
    assert new == old  # identical probabilities, labels and neutral-face PNGs
    assert all(("neutral" in r) is neutral for r in new)


def test_exported_archive_carries_and_uses_its_base(derl_store: Path, tmp_path: Path) -> None:
    path = derl_store / "derl.mar"
    with zipfile.ZipFile(path) as z:
        names = set(z.namelist())
    assert {MANIFEST, METADATA_FILE, WEIGHTS_FILE, "classifier.py", *SHARED_FILES} <= names

    loaded = open_archive(path, tmp_path)
    handler_type = type(loaded.handler)
    base_module = sys.modules[handler_type.__mro__[1].__module__]
    # the handler and its base come from the unpacked archive, as a package of their own
    assert handler_type.__module__.endswith(".classifier")
    assert handler_type.__module__.startswith("_fer_archive_")
    assert Path(base_module.__file__ or "").parent == Path(loaded.context.model_dir)
    assert handler_type is not ClassifierHandler

    rows = crop_rows(3, neutral=True)
    assert loaded.handler.handle(rows, loaded.context) == ClassifierHandler().handle(
        rows, loaded.context
    )


def test_handler_modules_define_one_class(
    derl_store: Path, transfer_store: Callable[[float], Path], tmp_path: Path
) -> None:
    """TorchServe's rule: a handler module defines exactly one class (its own check)."""
    from ts.utils.util import list_classes_from_module

    for path in (derl_store / "derl.mar", transfer_store(0.0) / "tdgan.mar"):
        handler_type = type(open_archive(path, tmp_path).handler)
        module = sys.modules[handler_type.__module__]
        assert list_classes_from_module(module) == [handler_type]
