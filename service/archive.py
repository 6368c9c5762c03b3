"""Reading `.mar` archives: their metadata, and their handlers run in-process.

A fer-service archive holds the handler file with the modules it imports (`base.py`,
`layout.py`), the network source, `weights.pt` (a state_dict) and `metadata.json` (the
names are in service/handlers/layout.py). `open_archive` unpacks one into a private cache
folder and instantiates its handler as TorchServe would (the one class the handler file
defines, then `initialize(context)`), which is how the LocalBackend and `fer-train
evaluate` run the very code TorchServe runs.

The unpacked folder is imported as a package of its own, named after its content hash, so
that the handler's imports of its siblings resolve to this archive's copies even when
several archives (of different versions) are loaded in one process. Archives exported
before `base.py` existed carry a self-contained handler and load the same way.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import inspect
import json
import os
import sys
import tempfile
import threading
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.handlers.layout import MANIFEST, METADATA_FILE


class InputSpec(BaseModel):
    """The face crop a model expects."""

    model_config = ConfigDict(extra="allow")

    size: int = Field(gt=0, description="side of the square crop in pixels")
    channels: Literal[1, 3] = 1
    color: Literal["gray", "rgb"] = "gray"
    mean: float
    std: float = Field(gt=0)
    framing: str = Field(description="crop framing of the training data, e.g. 'fer2013'")


class NetSpec(BaseModel):
    module: str
    file: str
    kwargs: dict[str, Any] = Field(default_factory=dict)
    #: Other network sources `file` loads from beside itself (e.g. its frame backbone).
    files: list[str] = Field(default_factory=list)


class ArchiveMetadata(BaseModel):
    """`metadata.json` inside every archive."""

    model_config = ConfigDict(extra="allow")

    kind: Literal["classifier", "derl", "transfer", "frontalizer", "sequence"] = "classifier"
    classes: list[str]
    input: InputSpec
    net: NetSpec
    tta_flip: bool = False


@dataclass
class Context:
    """The parts of TorchServe's handler context that fer-service handlers read."""

    model_dir: str
    model_name: str
    manifest: dict[str, Any]
    system_properties: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.system_properties = {
            "model_dir": self.model_dir,
            "gpu_id": None,
            "batch_size": 1,
            **self.system_properties,
        }


@dataclass
class LoadedArchive:
    """An archive unpacked and its handler initialised."""

    path: Path
    name: str
    version: str
    metadata: ArchiveMetadata
    handler: Any
    context: Context


def read_manifest(path: str | Path) -> tuple[dict[str, Any], ArchiveMetadata]:
    """MANIFEST.json and metadata.json of an archive, without unpacking it."""
    with zipfile.ZipFile(path) as z:
        manifest = json.loads(z.read(MANIFEST))
        metadata = ArchiveMetadata.model_validate_json(z.read(METADATA_FILE))
    return manifest, metadata


_lock = threading.Lock()


def _unpack(path: Path, cache: Path) -> Path:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    target = cache / f"{path.stem}-{digest}"
    with _lock:
        if not (target / MANIFEST).exists():
            tmp = Path(tempfile.mkdtemp(dir=cache))
            with zipfile.ZipFile(path) as z:
                z.extractall(tmp)
            with contextlib.suppress(OSError):  # another process won the race
                os.replace(tmp, target)
    return target


def _archive_package(model_dir: Path) -> str:
    """Import the unpacked archive `model_dir` as a package; its module name."""
    name = f"_fer_archive_{hashlib.sha256(str(model_dir).encode()).hexdigest()[:16]}"
    if name not in sys.modules:
        spec = importlib.util.spec_from_loader(name, loader=None, is_package=True)
        assert spec is not None
        package = importlib.util.module_from_spec(spec)
        package.__path__ = [str(model_dir)]
        sys.modules[name] = package
    return name


def handler_class(handler_file: Path) -> type:
    """The single class a handler file defines (TorchServe's own rule), imported as a
    module of its archive's package."""
    package = _archive_package(handler_file.parent)
    module = importlib.import_module(f"{package}.{handler_file.stem}")
    classes = [
        c
        for _, c in inspect.getmembers(module, inspect.isclass)
        if c.__module__ == module.__name__ and hasattr(c, "handle")
    ]
    if len(classes) != 1:
        raise ValueError(f"{handler_file}: expected one handler class, found {len(classes)}")
    return classes[0]


def open_archive(
    path: str | Path,
    cache_dir: str | Path | None = None,
    properties: dict[str, Any] | None = None,
) -> LoadedArchive:
    """Unpack `path` (cached by content hash) and initialise its handler in this process;
    `properties` join the context's system properties (e.g. the model runtime)."""
    path = Path(path)
    cache = Path(cache_dir or Path(tempfile.gettempdir()) / "fer-service-mar")
    cache.mkdir(parents=True, exist_ok=True)
    model_dir = _unpack(path, cache)
    manifest = json.loads((model_dir / MANIFEST).read_text())
    metadata = ArchiveMetadata.model_validate_json((model_dir / METADATA_FILE).read_text())
    model = manifest["model"]
    handler_file = model_dir / model["handler"].split(":")[0]
    handler = handler_class(handler_file)()
    context = Context(str(model_dir), model["modelName"], manifest, dict(properties or {}))
    handler.initialize(context)
    return LoadedArchive(
        path, model["modelName"], model.get("modelVersion", ""), metadata, handler, context
    )
