"""TorchServe handler for models that generate a face from aligned face crops.

Expression transfer (`tdgan`: a face and an expression in, the face wearing that
expression out) and frontalization (a face in, its frontal view out) share it; the archive's
`metadata.json` says which crops the network takes, in the order of its `forward`
arguments, under `"inputs"` (e.g. `["face", "expression"]`). Shipped in the archive with
`base.py`; the same class runs in TorchServe and in the gateway's LocalBackend.

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
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

try:
    from . import base
except ImportError:  # inside TorchServe: a top-level module beside base.py
    import base  # type: ignore[no-redef]


class GeneratorHandler(base.BaseHandler[list[torch.Tensor], "GeneratorHandler.Generated"]):
    """Named face crops in, a generated face (as a PNG) out."""

    # Nested: TorchServe wants one class per handler module.
    @dataclass
    class Generated:
        """Generated images in [-1, 1], [N, C, H, W], and class probabilities [N, classes] when
        the metadata asks for them."""

        images: torch.Tensor
        probs: torch.Tensor | None

    @property
    def inputs(self) -> list[str]:
        """The crops the network takes, in the order of its `forward` arguments."""
        return list(self.metadata.get("inputs") or ["face"])

    @property
    def classify_input(self) -> str | None:
        """The input the network's `classify` reads, when the archive lists classes."""
        name = self.metadata.get("classify") if self.classes else None
        if name is not None and name not in self.inputs:
            raise ValueError(f"'classify' names {name!r}, not one of the inputs")
        return name

    # -- decode ---------------------------------------------------------------------------
    def crop(self, name: str, encoded: Any) -> torch.Tensor:
        """One base64 crop to a normalised [C, S, S] tensor at the model's input size."""
        gray = self.metadata["input"].get("color", "gray") == "gray"
        try:
            image = base.read_image(
                base64.b64decode(encoded, validate=True), "L" if gray else "RGB", self.input_size
            )
        except Exception as exc:  # noqa: BLE001 - any decoder error is the client's input
            raise base.PredictionException(f"cannot decode the '{name}' crop: {exc}", 400) from exc
        a = np.asarray(image, dtype=np.float32) / 255.0
        a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
        return self.normalise(torch.from_numpy(np.ascontiguousarray(a)))

    def decode(self, data: list[Any]) -> list[torch.Tensor]:
        """A batch of requests to one batched tensor per input name."""
        rows = []
        for row in data:
            body = base.request_body(row)
            if isinstance(body, bytes | bytearray | str):
                body = base.parse_json(body)
            if not isinstance(body, dict):
                raise base.PredictionException("the body must be a JSON object of crops", 400)
            missing = [n for n in self.inputs if n not in body]
            if missing:
                raise base.PredictionException(f"missing crops: {', '.join(missing)}", 400)
            rows.append(body)
        return [
            torch.stack([self.crop(n, r[n]) for r in rows]).to(self.device) for n in self.inputs
        ]

    # -- infer ----------------------------------------------------------------------------
    def infer(self, batch: list[torch.Tensor]) -> GeneratorHandler.Generated:
        """The generated images and, if the metadata asks, the class probabilities from the
        network's `classify`."""
        model = self.net
        classify = self.classify_input
        with torch.inference_mode():
            images = model(*batch).float()
            probs = None
            if classify is not None:
                logits = model.classify(batch[self.inputs.index(classify)])  # type: ignore[operator]
                probs = torch.softmax(logits.float(), dim=1)
        return self.Generated(images, probs)

    # -- encode ---------------------------------------------------------------------------
    def encode(self, output: GeneratorHandler.Generated) -> list[dict[str, Any]]:
        """Each image as a base64 PNG (gray or RGB), with its probabilities if any."""
        rows = output.probs.cpu().double().numpy() if output.probs is not None else None
        out = []
        for i, a in enumerate(base.to_pixels(output.images)):
            a = a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0)
            result: dict[str, Any] = {
                "image": base.png_base64(a),
                "width": int(a.shape[1]),
                "height": int(a.shape[0]),
            }
            if rows is not None:
                result["probabilities"] = self.probabilities(rows[i])
            out.append(result)
        return out
