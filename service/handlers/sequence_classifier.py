"""TorchServe handler for sequence models: one face's aligned crops over time in, the
expression of the whole sequence out (the frame-to-sequence model, training/nets/sequence.py).

Shipped in the archive with `base.py`; the same class runs in TorchServe and in the
gateway's LocalBackend (the video job's per-track label).

Request body (one per sequence): JSON `{"frames": ["<base64 image>", ...]}`, the crops in
time order, each at the archive's input crop (resized if not). Response: JSON
`{"probabilities": {class: p, ...}, "label": top class, "frames": T}`.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import torch

try:
    from . import base
except ImportError:  # inside TorchServe: a top-level module beside base.py
    import base  # type: ignore[no-redef]

#: The longest sequence one request may carry.
MAX_FRAMES = 512


class SequenceHandler(base.BaseHandler[list[torch.Tensor], list[torch.Tensor]]):
    """Crop sequences in, one expression per sequence out."""

    def frames(self, row: Any) -> torch.Tensor:
        """One request row to its normalised crops `[T, 1, S, S]`."""
        payload = base.request_body(row)
        if isinstance(payload, bytes | bytearray | str):
            payload = base.parse_json(payload)
        frames = payload.get("frames") if isinstance(payload, dict) else None
        if not isinstance(frames, list) or not frames:
            raise base.PredictionException("the body must be {'frames': [base64 image, ...]}", 400)
        if len(frames) > MAX_FRAMES:
            raise base.PredictionException(f"at most {MAX_FRAMES} frames a sequence", 400)
        size = self.input_size
        crops = []
        for encoded in frames:
            try:
                data = base64.b64decode(encoded, validate=True)
                crops.append(np.asarray(base.read_image(data, "L", size), dtype=np.uint8))
            except Exception as exc:  # noqa: BLE001 - any decoding error is the client's input
                raise base.PredictionException(f"cannot decode a frame: {exc}", 400) from exc
        x = torch.from_numpy(np.stack(crops)).float().div_(255.0)
        return self.normalise(x).unsqueeze(1).to(self.device)

    def decode(self, data: list[Any]) -> list[torch.Tensor]:
        """Every request row's crops (sequences differ in length: one tensor each)."""
        return [self.frames(row) for row in data]

    def infer(self, batch: list[torch.Tensor]) -> list[torch.Tensor]:
        """Each sequence through the network: its class probabilities."""
        model = self.net
        out = []
        with torch.inference_mode():
            for x in batch:
                logits = model(x.unsqueeze(0))
                out.append(torch.softmax(logits.float(), dim=1)[0])
        return out

    def encode(self, output: list[torch.Tensor]) -> list[dict[str, Any]]:
        """Probabilities by class and the top class, one result per sequence."""
        results = []
        for probs in output:
            row = probs.cpu().double().numpy()
            results.append(
                {"probabilities": self.probabilities(row), "label": self.classes[int(row.argmax())]}
            )
        return results

    def predict_sequences(self, sequences: list[np.ndarray]) -> np.ndarray:
        """Probabilities `[N, classes]` for uint8 crop sequences, each `[T, S, S]` (direct
        use: evaluation, tests)."""
        model = self.net
        out = []
        with torch.inference_mode():
            for crops in sequences:
                x = torch.from_numpy(np.ascontiguousarray(crops)).float().div_(255.0)
                x = self.normalise(x).unsqueeze(1).unsqueeze(0).to(self.device)
                out.append(torch.softmax(model(x).float(), dim=1)[0].cpu().numpy())
        return np.stack(out) if out else np.zeros((0, len(self.classes)), np.float32)
