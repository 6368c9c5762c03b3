"""TorchServe handler for expression classifiers working on aligned grayscale face crops.

Shipped in the archive with `base.py` and `runtime.py`; the very same class runs in
TorchServe, in the gateway's LocalBackend and in `fer-train evaluate`. On the CPU the
network runs in ONNX Runtime when it is installed (see `runtime.py`), else in PyTorch.

Request body, one of:
- a batch of aligned crops as one NumPy `.npy` file (uint8 [N, S, S]; what the gateway
  sends: one request per photo, every face in one tensor), or JSON
  `{"crops": "<base64 .npy>", "neutral": true}` to also get DeRL's de-expressed faces;
  the response row is a JSON list of N results;
- one crop as an image file (PNG/JPEG/...), or JSON `{"image": "<base64 image>",
  "neutral": false}`; the response row is one result.

A result is `{"probabilities": {class: p, ...}, "label": top class}`, plus
`"neutral": "<base64 PNG>"` (the de-expressed face) when a DeRL model is asked for it.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

try:
    from . import base, runtime
except ImportError:  # inside TorchServe: top-level modules beside this file
    import base  # type: ignore[no-redef]
    import runtime  # type: ignore[no-redef]


class ClassifierHandler(
    base.BaseHandler["ClassifierHandler.Crops", "ClassifierHandler.Classified"]
):
    """Face crops in, expression probabilities (and DeRL's neutral faces) out."""

    channels_last = True
    #: Where the network runs ("onnx" or "torch") and how it is called; set by `setup`.
    engine = "torch"
    run: runtime.Runner

    # The stages' data types are nested: TorchServe wants one class per handler module.
    @dataclass
    class Crops:
        """A decoded batch: normalised crops [N, 1, S, S] of every request row, which crops
        want the neutral face, and how many crops each row holds (None: a single-crop row,
        answered with one result rather than a list)."""

        x: torch.Tensor
        neutral: list[bool]
        counts: list[int | None]

    @dataclass
    class Classified:
        """Class probabilities [N, classes] and, for the rows that asked, the neutral faces."""

        probs: torch.Tensor
        neutral: list[bool]
        faces: np.ndarray | None  # uint8 [N, S, S], when any row asked and the model has them
        counts: list[int | None]

    def setup(
        self, model: torch.nn.Module, state: dict[str, Any], metadata: dict[str, Any]
    ) -> None:
        """Install the network, then choose where it runs (ONNX Runtime or PyTorch)."""
        super().setup(model, state, metadata)
        size = self.input_size
        example = torch.zeros(2, 1, size, size, device=self.device)
        self.engine, self.run = runtime.choose(self.net, example, self.device, self.properties)
        runtime.log.info("the network runs in %s on %s", self.engine, self.device)

    # -- decode ---------------------------------------------------------------------------
    @staticmethod
    def unwrap(row: Any) -> tuple[Any, dict[str, Any]]:
        """A TorchServe request row -> (bytes of an image or of a `.npy` batch, options)."""
        payload = base.request_body(row)
        if isinstance(payload, bytearray):
            payload = bytes(payload)
        if isinstance(payload, str | bytes) and payload[:1] in ("{", b"{"):
            payload = base.parse_json(payload)
        if isinstance(payload, dict):  # JSON: {"image" or "crops": base64, options...}
            key = "crops" if "crops" in payload else "image"
            options = {k: v for k, v in payload.items() if k not in ("image", "crops")}
            try:
                return base64.b64decode(payload.get(key) or "", validate=True), options
            except (ValueError, TypeError) as exc:
                raise base.PredictionException(f"'{key}' must be base64", 400) from exc
        return payload, {}

    def crop(self, payload: Any) -> np.ndarray:
        """One image (bytes) to a uint8 [S, S] crop at the model's input size."""
        if not isinstance(payload, bytes) or not payload:
            raise base.PredictionException(
                "request body must be an image or {'image': base64}", 400
            )
        try:
            image = base.read_image(payload, "L", self.input_size)
        except Exception as exc:  # noqa: BLE001 - any decoder error is the client's input
            raise base.PredictionException(f"cannot decode the face crop: {exc}", 400) from exc
        return np.asarray(image, dtype=np.uint8)

    def batch(self, crops: np.ndarray) -> torch.Tensor:
        """uint8 [N, S, S] to the normalised float batch [N, 1, S, S] the network expects."""
        # uint8 to the device first: a quarter of the bytes of float32 cross the bus
        x = torch.from_numpy(np.ascontiguousarray(crops)).to(self.device).float().div_(255.0)
        return self.normalise(x).unsqueeze(1)

    def decode(self, data: list[Any]) -> ClassifierHandler.Crops:
        """A batch of request rows (single crops or `.npy` batches) as one tensor;
        remembers which crops asked for the neutral face and how many each row holds."""
        parts: list[np.ndarray] = []
        neutral: list[bool] = []
        counts: list[int | None] = []
        for row in data:
            body, options = self.unwrap(row)
            if isinstance(body, bytes) and body.startswith(base.NPY_MAGIC):
                crops = base.read_crops(body, self.input_size)
                counts.append(len(crops))
            else:
                crops = self.crop(body)[None]
                counts.append(None)
            parts.append(crops)
            neutral += [bool(options.get("neutral"))] * len(crops)
        size = self.input_size
        crops = np.concatenate(parts) if parts else np.zeros((0, size, size), np.uint8)
        return self.Crops(self.batch(crops), neutral, counts)

    # -- infer ----------------------------------------------------------------------------
    def infer(self, batch: ClassifierHandler.Crops) -> ClassifierHandler.Classified:
        """Class probabilities; averaged with the mirrored face when the metadata asks for
        flip test-time augmentation (both in one batch). DeRL models also generate the
        neutral faces when a crop asked for them (in PyTorch)."""
        x, n = batch.x, len(batch.x)
        faces = None
        if n == 0:
            probs = torch.zeros(0, len(self.classes))
            return self.Classified(probs, batch.neutral, faces, batch.counts)
        flip = bool(self.metadata.get("tta_flip"))
        if any(batch.neutral) and hasattr(self.net, "forward_all"):
            with torch.inference_mode():
                logits, _, neutral = self.net.forward_all(x)  # type: ignore[operator]
            faces = base.to_pixels(neutral)[:, 0]
            probs = torch.softmax(logits.float().cpu(), dim=1)
            if flip:
                mirrored = self.run(x.flip(3)).float().cpu()
                probs = (probs + torch.softmax(mirrored, dim=1)) / 2
        elif flip:
            both = torch.softmax(self.run(torch.cat([x, x.flip(3)])).float().cpu(), dim=1)
            probs = (both[:n] + both[n:]) / 2
        else:
            probs = torch.softmax(self.run(x).float().cpu(), dim=1)
        return self.Classified(probs, batch.neutral, faces, batch.counts)

    # -- encode ---------------------------------------------------------------------------
    def encode(self, output: ClassifierHandler.Classified) -> list[Any]:
        """Per request row: one result (single crop) or a list (a batch); a result holds
        the probabilities by class, the top class and, if asked, the neutral face."""
        results = []
        for i, row in enumerate(output.probs.double().numpy()):
            result: dict[str, Any] = {
                "probabilities": self.probabilities(row),
                "label": self.classes[int(row.argmax())],
            }
            if output.faces is not None and output.neutral[i]:
                result["neutral"] = base.png_base64(output.faces[i])
            results.append(result)
        out: list[Any] = []
        start = 0
        for count in output.counts:
            if count is None:
                out.append(results[start])
                start += 1
            else:
                out.append(results[start : start + count])
                start += count
        return out

    # -- direct use (evaluation, tests) ------------------------------------------------------
    def predict_arrays(self, crops: np.ndarray, batch_size: int = 512) -> np.ndarray:
        """Probabilities for uint8 crops [N, H, W] (resized to the input size if needed)."""
        size = self.input_size
        out = []
        for i in range(0, len(crops), batch_size):
            chunk = crops[i : i + batch_size]
            if chunk.shape[1:] != (size, size):
                chunk = base.resized(chunk, size)
            batch = self.Crops(self.batch(chunk), [False] * len(chunk), [len(chunk)])
            out.append(self.infer(batch).probs.numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)), np.float32)
