"""Checkpoint -> self-contained TorchServe `.mar` in the model store.

The archive carries the handler, the network source, the weights as a state_dict and
`metadata.json` (classes, input size, channels, normalisation, crop framing), so that it
runs in a stock TorchServe whose Python has only torch, numpy, Pillow and pyyaml.
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
from training.train import checkpoint

HANDLERS = Path(service.handlers.__file__).parent
NETS = Path(training.nets.__file__).parent

#: The handler file serving each kind of model.
HANDLER_FOR_KIND = {
    "classifier": "classifier.py",
    "derl": "classifier.py",
    "transfer": "generator.py",
    "frontalizer": "generator.py",
}

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
        (t / "metadata.json").write_text(json.dumps(meta, indent=1))
        (t / "model-config.yaml").write_text(MODEL_CONFIG)
        torch.save(weights, t / "weights.pt")
        shutil.copy(NETS / meta["net"]["file"], t / meta["net"]["file"])
        handler = HANDLER_FOR_KIND[meta.get("kind", "classifier")]
        shutil.copy(HANDLERS / handler, t / handler)
        cmd = [
            str(Path(sys.executable).parent / "torch-model-archiver"),
            "--model-name",
            name,
            "--version",
            version,
            "--handler",
            str(t / handler),
            "--serialized-file",
            str(t / "weights.pt"),
            "--extra-files",
            f"{t / 'metadata.json'},{t / meta['net']['file']}",
            "--config-file",
            str(t / "model-config.yaml"),
            "--export-path",
            str(store),
            "--force",
        ]
        subprocess.run(cmd, check=True)
    return store / f"{name}.mar"
