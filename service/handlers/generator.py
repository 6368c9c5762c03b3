"""TorchServe handler for models that generate a face from aligned face crops.

Expression transfer (`tdgan`: a face and an expression in, the face wearing that
expression out) and frontalization (a face in, its frontal view out) share it; the archive's
`metadata.json` says which crops the network takes, in the order of its `forward`
arguments, under `"inputs"` (e.g. `["face", "expression"]`).

Self-contained on purpose (torch, numpy and Pillow only): this file is copied into `.mar`
archives and the same class runs in TorchServe and in the gateway's LocalBackend.

Request body (one per generated image): JSON `{"<input>": "<base64 image>", ...}` with one
aligned crop per input name. The network maps normalised crops [N, C, S, S] to an image in
[-1, 1] (tanh; tdgan: 2 * sigmoid - 1), [N, 1 or 3, H, W]. Response: JSON
`{"image": "<base64 PNG>", "width": W, "height": H}`.

When the metadata names an input under `"classify"` (tdgan: `"expression"`) and lists
`"classes"`, the network's `classify(crop)` also reads that crop, and the response adds
`"probabilities": {class: p, ...}` (softmax of its logits; they sum to 1).
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import os
import sys
from typing import Any

import numpy as np
import torch
from PIL import Image

try:  # present inside TorchServe; a plain exception elsewhere
    from ts.utils.util import PredictionException
except ImportError:  # pragma: no cover - depends on the environment

    class PredictionException(Exception):  # type: ignore[no-redef]
        def __init__(self, message: str, error_code: int = 500) -> None:
            super().__init__(message)
            self.message = message
            self.error_code = error_code


METADATA_FILE = "metadata.json"
WEIGHTS_FILE = "weights.pt"


def load_module(path: str, name: str) -> Any:
    """Import a python file by path under a unique name (no sys.path changes).

    The same function as in classifier.py: each handler file must stand alone in its
    archive.
    """
    unique = f"_fer_{name}_{abs(hash(os.path.abspath(path)))}"
    if unique in sys.modules:
        return sys.modules[unique]
    spec = importlib.util.spec_from_file_location(unique, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[unique] = module
    spec.loader.exec_module(module)
    return module


class GeneratorHandler:
    """Loads `metadata.json`, the network source and `weights.pt`; crops in, a PNG out."""

    def __init__(self) -> None:
        self.initialized = False
        self.model: torch.nn.Module | None = None
        self.metadata: dict[str, Any] = {}
        self.inputs: list[str] = []
        self.classes: list[str] = []
        self.classify_input: str | None = None
        self.device = torch.device("cpu")

    def initialize(self, context: Any) -> None:
        """TorchServe entry point: `context.system_properties['model_dir']` holds the files."""
        props = context.system_properties
        gpu = props.get("gpu_id")
        if torch.cuda.is_available() and gpu is not None:
            self.device = torch.device(f"cuda:{gpu}")
        model_dir = props.get("model_dir")
        with open(os.path.join(model_dir, METADATA_FILE)) as f:
            metadata = json.load(f)
        net = load_module(os.path.join(model_dir, metadata["net"]["file"]), "net")
        state = torch.load(
            os.path.join(model_dir, WEIGHTS_FILE), map_location="cpu", weights_only=True
        )
        state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
        model = net.build(**metadata["net"]["kwargs"])
        model.load_state_dict(state)
        self.model = model.to(self.device).eval()
        self.metadata = metadata
        self.inputs = list(metadata.get("inputs") or ["face"])
        self.classes = list(metadata.get("classes") or [])
        self.classify_input = metadata.get("classify") if self.classes else None
        if self.classify_input is not None and self.classify_input not in self.inputs:
            raise ValueError(f"'classify' names {self.classify_input!r}, not one of the inputs")
        self.initialized = True

    def decode(self, name: str, encoded: Any) -> torch.Tensor:
        """One base64 crop to a normalised [C, S, S] tensor at the model's input size."""
        spec = self.metadata["input"]
        try:
            data = base64.b64decode(encoded, validate=True)
            image: Image.Image = Image.open(io.BytesIO(data))
            image = image.convert("L" if spec.get("color", "gray") == "gray" else "RGB")
        except Exception as exc:  # noqa: BLE001 - any decoder error is the client's input
            raise PredictionException(f"cannot decode the '{name}' crop: {exc}", 400) from exc
        size = int(spec["size"])
        if image.size != (size, size):
            image = image.resize((size, size), Image.Resampling.BILINEAR)
        a = np.asarray(image, dtype=np.float32) / 255.0
        a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
        x = torch.from_numpy(np.ascontiguousarray(a))
        return (x - float(spec["mean"])) / float(spec["std"])

    def preprocess(self, data: list[Any]) -> list[torch.Tensor]:
        """A batch of requests to one batched tensor per input name."""
        rows = []
        for row in data:
            body = (row.get("data") or row.get("body")) if isinstance(row, dict) else row
            if isinstance(body, bytes | bytearray | str):
                try:
                    body = json.loads(body)
                except ValueError as exc:
                    raise PredictionException(f"invalid JSON body: {exc}", 400) from exc
            if not isinstance(body, dict):
                raise PredictionException("the body must be a JSON object of crops", 400)
            missing = [n for n in self.inputs if n not in body]
            if missing:
                raise PredictionException(f"missing crops: {', '.join(missing)}", 400)
            rows.append(body)
        return [
            torch.stack([self.decode(n, r[n]) for r in rows]).to(self.device) for n in self.inputs
        ]

    def inference(self, x: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Generated images in [-1, 1], [N, C, H, W], and, if the metadata asks for them,
        class probabilities [N, classes] from the network's `classify`."""
        assert self.model is not None
        with torch.inference_mode():
            images = self.model(*x).float()
            probs = None
            if self.classify_input is not None:
                crops = x[self.inputs.index(self.classify_input)]
                logits = self.model.classify(crops)  # type: ignore[operator]
                probs = torch.softmax(logits.float(), dim=1)
        return images, probs

    def postprocess(self, output: tuple[torch.Tensor, torch.Tensor | None]) -> list[dict[str, Any]]:
        """Each image as a base64 PNG (gray or RGB), with its probabilities if any."""
        images, probs = output
        pixels = ((images.clamp(-1, 1) + 1) * 127.5).round().byte().cpu().numpy()
        rows = probs.cpu().double().numpy() if probs is not None else None
        out = []
        for i, a in enumerate(pixels):
            a = a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0)
            buf = io.BytesIO()
            Image.fromarray(np.ascontiguousarray(a)).save(buf, format="PNG")
            result: dict[str, Any] = {
                "image": base64.b64encode(buf.getvalue()).decode("ascii"),
                "width": int(a.shape[1]),
                "height": int(a.shape[0]),
            }
            if rows is not None:
                p = rows[i] / rows[i].sum()
                result["probabilities"] = {
                    c: float(v) for c, v in zip(self.classes, p, strict=True)
                }
            out.append(result)
        return out

    def handle(self, data: list[Any], context: Any) -> list[dict[str, Any]]:
        """TorchServe entry point: one result per request in the batch."""
        if not self.initialized:
            self.initialize(context)
        return self.postprocess(self.inference(self.preprocess(data)))
