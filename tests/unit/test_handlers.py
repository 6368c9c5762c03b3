"""The handlers of service/handlers against the archives: the shipped archives carry this
checkout's handler modules (`fer-train repack` keeps them current); the ONNX Runtime and
PyTorch runtimes give the same probabilities; a crops tensor and single-crop rows give the
same answers; a newly exported archive carries the shared modules and loads them from
itself, not from the source tree."""

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

from service.archive import open_archive, read_manifest
from service.handlers.classifier import ClassifierHandler
from service.handlers.layout import (
    HANDLER_FOR_KIND,
    MANIFEST,
    METADATA_FILE,
    SHARED_FILES,
    WEIGHTS_FILE,
)
from service.settings import DEFAULT_MODEL_STORE

HANDLERS = Path(__file__).resolve().parents[2] / "service" / "handlers"


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


def crops_body(crops: np.ndarray, neutral: bool = False) -> bytes:
    """A `.npy` crops tensor, optionally in the JSON wrapper that asks for neutral faces."""
    buf = io.BytesIO()
    np.save(buf, crops)
    if not neutral:
        return buf.getvalue()
    return json.dumps(
        {"crops": base64.b64encode(buf.getvalue()).decode(), "neutral": True}
    ).encode()


@pytest.mark.parametrize("path", sorted(DEFAULT_MODEL_STORE.glob("*.mar")), ids=lambda p: p.stem)
def test_shipped_archives_carry_the_current_handler(path: Path) -> None:
    """A stale handler in a shipped archive would serve other code than this checkout's
    (`fer-train repack` brings it up to date)."""
    _, metadata = read_manifest(path)
    with zipfile.ZipFile(path) as z:
        for module in (HANDLER_FOR_KIND[metadata.kind], *SHARED_FILES):
            assert z.read(module) == (HANDLERS / module).read_bytes(), module


@pytest.mark.parametrize("name", ["compact", "derl"])
def test_onnx_runtime_gives_the_torch_probabilities(name: str, tmp_path: Path) -> None:
    shipped = open_archive(DEFAULT_MODEL_STORE / f"{name}.mar", tmp_path)
    handlers = {}
    for runtime in ("torch", "onnx"):
        handler = ClassifierHandler()
        handler.properties = {"fer_runtime": runtime, "fer_threads": 1}
        handler.load_dir(shipped.context.model_dir)
        assert handler.engine == runtime
        handlers[runtime] = handler
    crops = np.random.default_rng(1).integers(0, 256, (7, 48, 48), dtype=np.uint8)
    torch_probs = handlers["torch"].predict_arrays(crops)
    onnx_probs = handlers["onnx"].predict_arrays(crops)
    assert np.abs(torch_probs - onnx_probs).max() < 1e-4
    # auto: ONNX Runtime on the CPU when it is installed (it is here)
    assert shipped.handler.engine == "onnx"


def test_a_crops_tensor_answers_as_single_crop_rows(tmp_path: Path) -> None:
    loaded = open_archive(DEFAULT_MODEL_STORE / "derl.mar", tmp_path)
    handler = loaded.handler
    rows = crop_rows(4, neutral=True)
    crops = np.stack([np.asarray(Image.open(io.BytesIO(_image(r)))) for r in rows])
    single = handler.handle(rows, loaded.context)
    (batched,) = handler.handle([{"body": crops_body(crops, neutral=True)}], loaded.context)
    assert isinstance(batched, list) and len(batched) == 4
    for one, many in zip(single, batched, strict=True):
        assert one["label"] == many["label"] and one["neutral"] == many["neutral"]
        for c, p in one["probabilities"].items():
            assert abs(p - many["probabilities"][c]) < 1e-6
    # TorchServe batches several requests into one call: each row gets its own answer
    plain = crops_body(crops[:2])
    answers = handler.handle([{"body": plain}, rows[3], {"body": plain}], loaded.context)
    assert [len(answers[0]), len(answers[2])] == [2, 2] and isinstance(answers[1], dict)
    assert "neutral" not in answers[0][0] and "neutral" in answers[1]


@pytest.mark.parametrize(
    "tensor",
    [
        np.zeros((2, 48, 48), np.float32),  # not uint8
        np.zeros((2, 48, 40), np.uint8),  # not square
        np.zeros((48, 48), np.uint8),  # no batch dimension
    ],
)
def test_a_malformed_crops_tensor_is_the_clients_400(tensor: np.ndarray, tmp_path: Path) -> None:
    loaded = open_archive(DEFAULT_MODEL_STORE / "compact.mar", tmp_path)
    with pytest.raises(Exception, match="crops tensor") as info:
        loaded.handler.handle([{"body": crops_body(tensor)}], loaded.context)
    assert getattr(info.value, "error_code", None) == 400


def _image(row: dict[str, bytes]) -> bytes:
    return base64.b64decode(json.loads(row["body"])["image"])


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
    current = ClassifierHandler()
    current.load_dir(loaded.context.model_dir)
    assert loaded.handler.handle(rows, loaded.context) == current.handle(rows, loaded.context)


def test_handler_modules_define_one_class(
    derl_store: Path, transfer_store: Callable[[float], Path], tmp_path: Path
) -> None:
    """TorchServe's rule: a handler module defines exactly one class (its own check)."""
    from ts.utils.util import list_classes_from_module

    for path in (derl_store / "derl.mar", transfer_store(0.0) / "tdgan.mar"):
        handler_type = type(open_archive(path, tmp_path).handler)
        module = sys.modules[handler_type.__module__]
        assert list_classes_from_module(module) == [handler_type]
