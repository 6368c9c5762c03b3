"""What every fer-service handler shares: loading an archive, TorchServe's entry point and
the helpers of the request/response formats. Shipped inside every archive.

A handler subclasses `BaseHandler` and overrides only `decode` (TorchServe's request rows
to a batch), `infer` (the batch through the network) and `encode` (the output to one JSON
row per request); each stage returns what the next one takes, so nothing passes through
attributes. `handle` chains them, as TorchServe's `preprocess` / `inference` /
`postprocess` do.

Imports: inside the service package (and when service/archive.py loads an archive as a
package) `.layout` is a relative import; TorchServe imports the handler as a top-level
module with the archive's folder on its path, where the plain `layout` is found.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import os
import sys
from typing import Any, Generic, TypeVar

import numpy as np
import torch
from PIL import Image

try:
    from .layout import METADATA_FILE, WEIGHTS_FILE
except ImportError:  # inside TorchServe: a top-level module beside layout.py
    from layout import METADATA_FILE, WEIGHTS_FILE  # type: ignore[no-redef]

try:  # present inside TorchServe; a plain exception elsewhere
    from ts.utils.util import PredictionException
except ImportError:  # pragma: no cover - depends on the environment

    class PredictionException(Exception):  # type: ignore[no-redef]
        """TorchServe's error for the client: `message` with an HTTP `error_code`."""

        def __init__(self, message: str, error_code: int = 500) -> None:
            super().__init__(message)
            self.message = message
            self.error_code = error_code


Batch = TypeVar("Batch")
Output = TypeVar("Output")


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


def request_body(row: Any) -> Any:
    """The body of a TorchServe request row (`{"data": ...}` or `{"body": ...}`)."""
    if isinstance(row, dict) and ("data" in row or "body" in row):
        return row.get("data") or row.get("body")
    return row


def parse_json(body: Any) -> Any:
    """A JSON request body as Python objects; 400 if it is not JSON."""
    try:
        return json.loads(body)
    except ValueError as exc:
        raise PredictionException(f"invalid JSON body: {exc}", 400) from exc


def read_image(data: bytes, mode: str, size: int) -> Image.Image:
    """An image file in Pillow `mode`, resized to `size` x `size` if it is not that size.
    The caller turns decoder errors into the client's 400."""
    image: Image.Image = Image.open(io.BytesIO(data)).convert(mode)
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    return image


#: The first bytes of every NumPy `.npy` file: a batch of crops as one uint8 tensor.
NPY_MAGIC = b"\x93NUMPY"


def read_crops(payload: bytes, size: int) -> np.ndarray:
    """A `.npy` tensor of gray crops to uint8 [N, size, size] (resized bilinear, as image
    bodies are, when the crops are another size); 400 for anything else."""
    try:
        crops = np.load(io.BytesIO(payload), allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - any reader error is the client's input
        raise PredictionException(f"cannot read the crops tensor: {exc}", 400) from exc
    if crops.dtype != np.uint8 or crops.ndim != 3 or crops.shape[1] != crops.shape[2]:
        raise PredictionException(
            f"the crops tensor must be uint8 [N, S, S], not {crops.dtype} {list(crops.shape)}",
            400,
        )
    if crops.shape[1] != size:
        crops = resized(crops, size)
    return crops


def resized(crops: np.ndarray, size: int) -> np.ndarray:
    """uint8 crops [N, H, W] resized to `size` x `size` (bilinear)."""
    return np.stack(
        [
            np.asarray(Image.fromarray(c).resize((size, size), Image.Resampling.BILINEAR))
            for c in crops
        ]
    ).astype(np.uint8)


def png_base64(pixels: np.ndarray) -> str:
    """uint8 pixels ([H, W] gray or [H, W, 3] RGB) as a base64 PNG."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def to_pixels(images: torch.Tensor) -> np.ndarray:
    """Network images in [-1, 1] to uint8 pixels, same shape."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().byte().cpu().numpy()


class BaseHandler(Generic[Batch, Output]):
    """Loads `metadata.json`, the network source and `weights.pt` from a model directory
    and runs requests through `decode`, `infer` and `encode`."""

    #: Lay the network's tensors out channels-last (~1.5x faster for convnets on CPU).
    channels_last = False

    def __init__(self) -> None:
        self.initialized = False
        self.model: torch.nn.Module | None = None
        self.metadata: dict[str, Any] = {}
        self.classes: list[str] = []
        self.device = torch.device("cpu")
        # The context's system properties (the gateway adds its runtime settings there).
        self.properties: dict[str, Any] = {}

    # -- loading -------------------------------------------------------------------------
    def initialize(self, context: Any) -> None:
        """TorchServe entry point: `context.system_properties['model_dir']` holds the files."""
        props = context.system_properties
        self.properties = dict(props)
        gpu = props.get("gpu_id")
        if torch.cuda.is_available() and gpu is not None:
            self.device = torch.device(f"cuda:{gpu}")
        self.load_dir(props.get("model_dir"))

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
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.model = model.eval()
        self.metadata = metadata
        self.classes = list(metadata.get("classes") or [])
        self.initialized = True

    @property
    def net(self) -> torch.nn.Module:
        """The loaded network."""
        if self.model is None:
            raise RuntimeError("the handler is not initialised")
        return self.model

    @property
    def input_size(self) -> int:
        """Side of the square crop the network takes."""
        return int(self.metadata["input"]["size"])

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """Pixels scaled to [0, 1] to the network's normalised input."""
        spec = self.metadata["input"]
        return (x - float(spec["mean"])) / float(spec["std"])

    def probabilities(self, probs: np.ndarray) -> dict[str, float]:
        """One row of class probabilities, renormalised to sum to 1, by class name."""
        row = probs / probs.sum()
        return {c: float(p) for c, p in zip(self.classes, row, strict=True)}

    # -- the pipeline ----------------------------------------------------------------------
    def decode(self, data: list[Any]) -> Batch:
        """TorchServe's request rows to one batch (400s as `PredictionException`)."""
        raise NotImplementedError

    def infer(self, batch: Batch) -> Output:
        """The batch through the network."""
        raise NotImplementedError

    def encode(self, output: Output) -> list[dict[str, Any]]:
        """One JSON-able result per request row."""
        raise NotImplementedError

    def handle(self, data: list[Any], context: Any) -> list[dict[str, Any]]:
        """TorchServe entry point: one result per request in the batch."""
        if not self.initialized:
            self.initialize(context)
        return self.encode(self.infer(self.decode(data)))
