"""TorchServe handler for expression classifiers working on aligned grayscale face crops.

Self-contained on purpose (torch, numpy and Pillow only): this file is the archive's
handler, and the very same class runs in TorchServe, in the gateway's LocalBackend and in
`fer-train evaluate`.

Request body (one per face): either the aligned crop as an image file (PNG/JPEG/...) or
JSON `{"image": "<base64 image>", "neutral": false}`. Response: JSON
`{"probabilities": {class: p, ...}, "label": top class}`, plus `"neutral": "<base64 PNG>"`
(the de-expressed face) when a DeRL model is asked for it with `"neutral": true`.
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

try:  # present inside TorchServe; a plain ValueError elsewhere
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
    """Import a python file by path under a unique name (no sys.path changes)."""
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


class ClassifierHandler:
    """Loads `metadata.json`, the network source and `weights.pt` from a model directory."""

    def __init__(self) -> None:
        self.initialized = False
        self.model: torch.nn.Module | None = None
        self.metadata: dict[str, Any] = {}
        self.classes: list[str] = []
        self.device = torch.device("cpu")

    # -- loading -------------------------------------------------------------------------
    def initialize(self, context: Any) -> None:
        """TorchServe entry point: `context.system_properties['model_dir']` holds the files."""
        props = context.system_properties
        model_dir = props.get("model_dir")
        gpu = props.get("gpu_id")
        if torch.cuda.is_available() and gpu is not None:
            self.device = torch.device(f"cuda:{gpu}")
        self.load_dir(model_dir)

    def load_dir(self, model_dir: str) -> None:
        """Load the network described by `metadata.json` in `model_dir`."""
        with open(os.path.join(model_dir, METADATA_FILE)) as f:
            metadata = json.load(f)
        net = load_module(os.path.join(model_dir, metadata["net"]["file"]), "net")
        state = torch.load(
            os.path.join(model_dir, WEIGHTS_FILE), map_location="cpu", weights_only=True
        )
        self.setup(net.build(**metadata["net"]["kwargs"]), state, metadata)

    def setup(
        self, model: torch.nn.Module, state: dict[str, Any], metadata: dict[str, Any]
    ) -> None:
        """Install a network with its weights (fp16 weights are cast back to fp32)."""
        state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
        model.load_state_dict(state)
        # channels_last is ~1.5x faster for these convnets on CPU and harmless on GPU.
        model = model.to(self.device).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.model = model.eval()
        self.metadata = metadata
        self.classes = list(metadata["classes"])
        self.initialized = True

    # -- the pipeline ----------------------------------------------------------------------
    @property
    def input_size(self) -> int:
        return int(self.metadata["input"]["size"])

    @staticmethod
    def unwrap(payload: Any) -> tuple[Any, dict[str, Any]]:
        """A TorchServe request row -> (image bytes, options)."""
        if isinstance(payload, dict) and ("data" in payload or "body" in payload):
            payload = payload.get("data") or payload.get("body")
        if isinstance(payload, bytearray):
            payload = bytes(payload)
        if isinstance(payload, str | bytes) and payload[:1] in ("{", b"{"):
            try:
                payload = json.loads(payload)
            except ValueError as exc:
                raise PredictionException(f"invalid JSON body: {exc}", 400) from exc
        if isinstance(payload, dict):  # JSON: {"image": base64, options...}
            options = {k: v for k, v in payload.items() if k != "image"}
            try:
                return base64.b64decode(payload.get("image", ""), validate=True), options
            except ValueError as exc:
                raise PredictionException("'image' must be base64", 400) from exc
        return payload, {}

    def decode(self, payload: Any) -> np.ndarray:
        """One image (bytes) to a uint8 [S, S] crop at the model's input size."""
        if not isinstance(payload, bytes) or not payload:
            raise PredictionException("request body must be an image or {'image': base64}", 400)
        try:
            image: Image.Image = Image.open(io.BytesIO(payload)).convert("L")
        except Exception as exc:  # noqa: BLE001 - any decoder error is the client's input
            raise PredictionException(f"cannot decode the face crop: {exc}", 400) from exc
        size = self.input_size
        if image.size != (size, size):
            image = image.resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(image, dtype=np.uint8)

    def normalise(self, crops: np.ndarray) -> torch.Tensor:
        """uint8 [N, S, S] to the normalised float batch [N, 1, S, S] the network expects."""
        spec = self.metadata["input"]
        x = torch.from_numpy(np.ascontiguousarray(crops)).float().div_(255.0)
        x = (x - float(spec["mean"])) / float(spec["std"])
        return x.unsqueeze(1).to(self.device)

    def preprocess(self, data: list[Any]) -> torch.Tensor:
        """Decode a batch of requests; remembers which rows asked for the neutral face."""
        rows = [self.unwrap(row) for row in data]
        self._want_neutral = [bool(opts.get("neutral")) for _, opts in rows]
        return self.normalise(np.stack([self.decode(body) for body, _ in rows]))

    def inference(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities [N, classes]; averaged with the mirrored face when the
        metadata asks for flip test-time augmentation. For DeRL rows that asked for it, the
        generated neutral faces are kept for `postprocess`."""
        assert self.model is not None
        self._neutral: np.ndarray | None = None
        want = getattr(self, "_want_neutral", [])
        with torch.inference_mode():
            if any(want) and hasattr(self.model, "forward_all"):
                logits, _, neutral = self.model.forward_all(x)  # type: ignore[operator]
                self._neutral = (
                    ((neutral.float().clamp(-1, 1) + 1) * 127.5).round().byte()[:, 0].cpu().numpy()
                )
            else:
                logits = self.model(x)
            probs = torch.softmax(logits.float(), dim=1)
            if self.metadata.get("tta_flip"):
                probs = (probs + torch.softmax(self.model(x.flip(3)).float(), dim=1)) / 2
        return probs

    def postprocess(self, probs: torch.Tensor) -> list[dict[str, Any]]:
        out = []
        neutral = getattr(self, "_neutral", None)
        for i, row in enumerate(probs.cpu().double().numpy()):
            row = row / row.sum()
            result: dict[str, Any] = {
                "probabilities": {c: float(p) for c, p in zip(self.classes, row, strict=True)},
                "label": self.classes[int(row.argmax())],
            }
            if neutral is not None and self._want_neutral[i]:
                buf = io.BytesIO()
                Image.fromarray(neutral[i]).save(buf, format="PNG")
                result["neutral"] = base64.b64encode(buf.getvalue()).decode("ascii")
            out.append(result)
        return out

    def handle(self, data: list[Any], context: Any) -> list[dict[str, Any]]:
        """TorchServe entry point: one result per request in the batch."""
        if not self.initialized:
            self.initialize(context)
        return self.postprocess(self.inference(self.preprocess(data)))

    # -- direct use (evaluation, tests) ------------------------------------------------------
    def predict_arrays(self, crops: np.ndarray, batch_size: int = 512) -> np.ndarray:
        """Probabilities for uint8 crops [N, H, W] (resized to the input size if needed)."""
        size = self.input_size
        out = []
        for i in range(0, len(crops), batch_size):
            chunk = crops[i : i + batch_size]
            if chunk.shape[1:] != (size, size):
                chunk = np.stack(
                    [
                        np.asarray(
                            Image.fromarray(c).resize((size, size), Image.Resampling.BILINEAR)
                        )
                        for c in chunk
                    ]
                )
            self._want_neutral = [False] * len(chunk)
            out.append(self.inference(self.normalise(chunk)).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)), np.float32)
