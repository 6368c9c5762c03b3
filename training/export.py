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
from pathlib import Path
from typing import Any

import torch

import service.handlers
import training.nets
from service.archive import ArchiveMetadata
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
    store.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        (t / METADATA_FILE).write_text(json.dumps(meta, indent=1))
        (t / MODEL_CONFIG_FILE).write_text(MODEL_CONFIG)
        torch.save(weights, t / WEIGHTS_FILE)
        # The network's source, and the sources it loads from beside itself.
        sources = [meta["net"]["file"], *meta["net"].get("files", [])]
        for source in sources:
            shutil.copy(NETS / source, t / source)
        handler = HANDLER_FOR_KIND[meta.get("kind", "classifier")]
        # The handler imports the shared modules, which travel with it.
        for module in (handler, *SHARED_FILES):
            shutil.copy(HANDLERS / module, t / module)
        extra = [METADATA_FILE, *sources, *SHARED_FILES]
        cmd = [
            str(Path(sys.executable).parent / "torch-model-archiver"),
            "--model-name",
            name,
            "--version",
            version,
            "--handler",
            str(t / handler),
            "--serialized-file",
            str(t / WEIGHTS_FILE),
            "--extra-files",
            ",".join(str(t / f) for f in extra),
            "--config-file",
            str(t / MODEL_CONFIG_FILE),
            "--export-path",
            str(store),
            "--force",
        ]
        subprocess.run(cmd, check=True)
    return store / f"{name}.mar"
