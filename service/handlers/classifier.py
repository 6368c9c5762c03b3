"""TorchServe handler for expression classifiers working on aligned grayscale face crops.

Shipped in the archive with `base.py`; the very same class runs in TorchServe, in the
gateway's LocalBackend and in `fer-train evaluate`.

Request body (one per face): either the aligned crop as an image file (PNG/JPEG/...) or
JSON `{"image": "<base64 image>", "neutral": false}`. Response: JSON
`{"probabilities": {class: p, ...}, "label": top class}`, plus `"neutral": "<base64 PNG>"`
(the de-expressed face) when a DeRL model is asked for it with `"neutral": true`.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

try:
    from . import base
except ImportError:  # inside TorchServe: a top-level module beside base.py
    import base  # type: ignore[no-redef]


class ClassifierHandler(
    base.BaseHandler["ClassifierHandler.Crops", "ClassifierHandler.Classified"]
):
    """Face crops in, expression probabilities (and DeRL's neutral faces) out."""

    channels_last = True

    # The stages' data types are nested: TorchServe wants one class per handler module.
    @dataclass
    class Crops:
        """A decoded batch: normalised crops [N, 1, S, S], and which rows want the neutral face."""

        x: torch.Tensor
        neutral: list[bool]

    @dataclass
    class Classified:
        """Class probabilities [N, classes] and, for the rows that asked, the neutral faces."""

        probs: torch.Tensor
        neutral: list[bool]
        faces: np.ndarray | None  # uint8 [N, S, S], when any row asked and the model has them

    # -- decode ---------------------------------------------------------------------------
    @staticmethod
    def unwrap(row: Any) -> tuple[Any, dict[str, Any]]:
        """A TorchServe request row -> (image bytes, options)."""
        payload = base.request_body(row)
        if isinstance(payload, bytearray):
            payload = bytes(payload)
        if isinstance(payload, str | bytes) and payload[:1] in ("{", b"{"):
            payload = base.parse_json(payload)
        if isinstance(payload, dict):  # JSON: {"image": base64, options...}
            options = {k: v for k, v in payload.items() if k != "image"}
            try:
                return base64.b64decode(payload.get("image", ""), validate=True), options
            except ValueError as exc:
                raise base.PredictionException("'image' must be base64", 400) from exc
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
        x = torch.from_numpy(np.ascontiguousarray(crops)).float().div_(255.0)
        return self.normalise(x).unsqueeze(1).to(self.device)

    def decode(self, data: list[Any]) -> ClassifierHandler.Crops:
        """A batch of requests; remembers which rows asked for the neutral face."""
        rows = [self.unwrap(row) for row in data]
        crops = np.stack([self.crop(body) for body, _ in rows])
        return self.Crops(self.batch(crops), [bool(opts.get("neutral")) for _, opts in rows])

    # -- infer ----------------------------------------------------------------------------
    def infer(self, batch: ClassifierHandler.Crops) -> ClassifierHandler.Classified:
        """Class probabilities; averaged with the mirrored face when the metadata asks for
        flip test-time augmentation. DeRL models also generate the neutral faces when a
        row asked for them."""
        model, x = self.net, batch.x
        faces = None
        with torch.inference_mode():
            if any(batch.neutral) and hasattr(model, "forward_all"):
                logits, _, neutral = model.forward_all(x)  # type: ignore[operator]
                faces = base.to_pixels(neutral)[:, 0]
            else:
                logits = model(x)
            probs = torch.softmax(logits.float(), dim=1)
            if self.metadata.get("tta_flip"):
                probs = (probs + torch.softmax(model(x.flip(3)).float(), dim=1)) / 2
        return self.Classified(probs, batch.neutral, faces)

    # -- encode ---------------------------------------------------------------------------
    def encode(self, output: ClassifierHandler.Classified) -> list[dict[str, Any]]:
        """Probabilities by class, the top class and, if asked, the neutral face."""
        out = []
        for i, row in enumerate(output.probs.cpu().double().numpy()):
            result: dict[str, Any] = {
                "probabilities": self.probabilities(row),
                "label": self.classes[int(row.argmax())],
            }
            if output.faces is not None and output.neutral[i]:
                result["neutral"] = base.png_base64(output.faces[i])
            out.append(result)
        return out

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
            batch = self.Crops(self.batch(chunk), [False] * len(chunk))
            out.append(self.infer(batch).probs.cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)), np.float32)
