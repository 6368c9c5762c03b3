"""TorchServe handler for sequence models: one face's aligned crops over time in, the
expression of the whole sequence out (the frame-to-sequence model, training/nets/sequence.py).

Shipped in the archive with `base.py`; the same class runs in TorchServe and in the
gateway's LocalBackend (the video job's per-track label).

Request body (one per sequence): the crops in time order as one uint8 tensor `[T, S, S]`,
a NumPy `.npy` file, as the classifier handler takes a photo's crops (resized if not at the
archive's input size). Response: JSON `{"probabilities": {class: p, ...}, "label": top
class}`.
"""

from __future__ import annotations

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
        if isinstance(payload, bytearray):
            payload = bytes(payload)
        if not isinstance(payload, bytes) or not payload.startswith(base.NPY_MAGIC):
            raise base.PredictionException(
                "the body must be the crops as a .npy uint8 [T, S, S] tensor", 400
            )
        crops = base.read_crops(payload, self.input_size)
        if not len(crops):
            raise base.PredictionException("a sequence needs at least one frame", 400)
        if len(crops) > MAX_FRAMES:
            raise base.PredictionException(f"at most {MAX_FRAMES} frames a sequence", 400)
        x = torch.from_numpy(crops).to(self.device).float().div_(255.0)
        return self.normalise(x).unsqueeze(1)

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
