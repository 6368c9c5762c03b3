"""Checkpoint -> self-contained TorchServe `.mar` in the model store.

The archive carries the handler with the shared handler modules (base.py, layout.py), the
network source, the weights as a state_dict and `metadata.json` (classes, input size,
channels, normalisation, crop framing), so that it runs in a stock TorchServe whose Python
has only torch, numpy, Pillow and pyyaml. File names: service/handlers/layout.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

import service.handlers
import training.nets
from service.archive import ArchiveMetadata, read_manifest
from service.handlers.layout import (
    HANDLER_FOR_KIND,
    METADATA_FILE,
    MODEL_CONFIG_FILE,
    SHARED_FILES,
    WEIGHTS_FILE,
)
from training.train import checkpoint

HANDLERS = Path(service.handlers.__file__).parent
NETS = Path(training.nets.__file__).parent

#: Per-model TorchServe settings carried inside the archive (model-config.yaml).
MODEL_CONFIG = """\
minWorkers: 1
maxWorkers: 1
batchSize: 16
maxBatchDelay: 10
responseTimeout: 60
"""


def export(ckpt_path: Path, name: str, version: str, store: Path, fp16: bool = False) -> Path:
    """Write `store/<name>.mar` from a checkpoint; returns the archive's path."""
    state = checkpoint.load(ckpt_path)
    meta: dict[str, Any] = dict(state["metadata"])
    meta["name"] = name
    meta["version"] = version
    meta["parameters"] = int(state.get("parameters", 0))
    ArchiveMetadata.model_validate(meta)  # refuse to ship an archive the gateway can't read
    weights = {
        k: (v.half() if fp16 and v.is_floating_point() else v).contiguous()
        for k, v in state["model"].items()
    }
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        (t / METADATA_FILE).write_text(json.dumps(meta, indent=1))
        (t / MODEL_CONFIG_FILE).write_text(MODEL_CONFIG)
        torch.save(weights, t / WEIGHTS_FILE)
        # The network's source, and the sources it loads from beside itself.
        for source in net_sources(meta):
            shutil.copy(NETS / source, t / source)
        return _archive(t, meta, name, version, store)


def repack(archive: Path, store: Path) -> Path:
    """Write `store/<name>.mar` from `archive` with this checkout's handler modules, keeping
    everything the model is (the network source, `weights.pt` byte for byte, metadata,
    TorchServe settings, name and version): how an archive picks up a faster or fixed
    handler without retraining. Returns the new archive's path."""
    manifest, _ = read_manifest(archive)
    model = manifest["model"]
    name, version = model["modelName"], model.get("modelVersion", "")
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(archive) as z:
        t = Path(tmp)
        meta = json.loads(z.read(METADATA_FILE))
        for member in (WEIGHTS_FILE, *net_sources(meta)):
            (t / member).write_bytes(z.read(member))
        (t / METADATA_FILE).write_bytes(z.read(METADATA_FILE))
        try:
            (t / MODEL_CONFIG_FILE).write_bytes(z.read(MODEL_CONFIG_FILE))
        except KeyError:  # archives from before per-model settings
            (t / MODEL_CONFIG_FILE).write_text(MODEL_CONFIG)
        return _archive(t, meta, name, version, store)


def net_sources(meta: dict[str, Any]) -> list[str]:
    """The network's source file and the sources it loads from beside itself."""
    return [meta["net"]["file"], *meta["net"].get("files", [])]


def _archive(files: Path, meta: dict[str, Any], name: str, version: str, store: Path) -> Path:
    """Run torch-model-archiver over the folder `files` (metadata, weights, model config and
    network source), adding the handler of the model's kind and the shared modules."""
    store.mkdir(parents=True, exist_ok=True)
    handler = HANDLER_FOR_KIND[meta.get("kind", "classifier")]
    # The handler imports the shared modules, which travel with it.
    for module in (handler, *SHARED_FILES):
        shutil.copy(HANDLERS / module, files / module)
    extra = [METADATA_FILE, *net_sources(meta), *SHARED_FILES]
    cmd = [
        str(Path(sys.executable).parent / "torch-model-archiver"),
        "--model-name",
        name,
        "--version",
        version,
        "--handler",
        str(files / handler),
        "--serialized-file",
        str(files / WEIGHTS_FILE),
        "--extra-files",
        ",".join(str(files / f) for f in extra),
        "--config-file",
        str(files / MODEL_CONFIG_FILE),
        "--export-path",
        str(store),
        "--force",
    ]
    subprocess.run(cmd, check=True)
    return store / f"{name}.mar"
