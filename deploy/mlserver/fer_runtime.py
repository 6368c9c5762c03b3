"""fer-service archives in MLServer: the Open Inference Protocol v2 face of a `.mar`.

An MLServer custom runtime (`implementation: fer_runtime.ArchiveRuntime` in a model's
`model-settings.json`, `parameters.uri` the path of the `.mar`). It loads the archive with
`service.archive.open_archive` and runs the archive's own handler, exactly as TorchServe
and the gateway's embedded backend do, so all three answer alike; only the transport is
OIP v2 (what `service/oip.py`, the gateway's OIP backend, speaks):

- classifiers (`classifier`, `derl`) and `sequence` models: input `crops`, UINT8
  `[N, S, S]` (a sequence model: the T crops of one track); parameter `neutral` (bool,
  DeRL). Outputs `probabilities`, FP32 `[N, classes]` (`[1, classes]` for a sequence), in
  the archive's class order; with `neutral`, `neutral`, BYTES `[N]` (base64 PNGs).
- generators (`transfer`, `frontalizer`): one UINT8 input per crop the archive names
  (`face`, `expression`), `[1, S, S]` or `[1, S, S, 3]`. Outputs `image`, BYTES `[1]` (a
  base64 PNG), and `probabilities` FP32 `[1, classes]` when the archive classifies.

Needs, beside MLServer: fer-service itself (`pip install --no-deps`), torch, numpy,
Pillow, pydantic (and onnx + onnxruntime for the CPU fast path).
"""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.errors import MLServerError
from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput

from service.archive import open_archive

CLASSIFYING = ("classifier", "derl", "sequence")


class BadRequest(MLServerError):
    """The client's input: HTTP 400."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status_code=400)


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array, dtype=np.uint8), allow_pickle=False)
    return buf.getvalue()


def _uint8(request: InferenceRequest, name: str) -> np.ndarray:
    for tensor in request.inputs:
        if tensor.name == name:
            if tensor.datatype != "UINT8":
                raise BadRequest(f"input '{name}' must be UINT8, not {tensor.datatype}")
            try:
                return NumpyCodec.decode_input(tensor).astype(np.uint8)
            except Exception as exc:  # noqa: BLE001 - a malformed tensor is the client's
                raise BadRequest(f"input '{name}': {exc}") from exc
    raise BadRequest(f"missing input '{name}'")


def _bytes_output(name: str, values: list[str]) -> ResponseOutput:
    return ResponseOutput(name=name, shape=[len(values)], datatype="BYTES", data=values)


def _fp32_output(name: str, rows: list[list[float]]) -> ResponseOutput:
    array = np.asarray(rows, dtype=np.float32)
    return ResponseOutput(
        name=name, shape=list(array.shape), datatype="FP32", data=array.ravel().tolist()
    )


class ArchiveRuntime(MLModel):
    """One fer-service archive served over OIP v2 by its own handler."""

    async def load(self) -> bool:
        uri = self.settings.parameters.uri if self.settings.parameters else None
        if not uri:
            raise MLServerError("model-settings.json needs parameters.uri: the .mar file")
        self.archive = open_archive(uri)
        self.kind = self.archive.metadata.kind
        self.classes = list(self.archive.metadata.classes)
        return True

    def _handle(self, body: bytes) -> Any:
        handler, context = self.archive.handler, self.archive.context
        try:
            (row,) = handler.handle([{"body": body}], context)
        except Exception as exc:  # the handler's PredictionException carries a status
            code = getattr(exc, "error_code", 500)
            if code == 400:
                raise BadRequest(str(getattr(exc, "message", exc))) from exc
            raise
        return row

    def _probabilities(self, result: dict[str, Any]) -> list[float]:
        return [float(result["probabilities"][c]) for c in self.classes]

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        outputs: list[ResponseOutput]
        if self.kind in CLASSIFYING:
            crops = _uint8(payload, "crops")
            if crops.ndim != 3 or not len(crops):
                raise BadRequest(f"input 'crops' must be [N, S, S], not {list(crops.shape)}")
            params = payload.parameters.model_dump() if payload.parameters else {}
            neutral = bool(params.get("neutral")) and self.kind == "derl"
            body = _npy(crops)
            if neutral:
                body = json.dumps(
                    {"crops": base64.b64encode(body).decode(), "neutral": True}
                ).encode()
            row = self._handle(body)
            results = [row] if isinstance(row, dict) else list(row)
            outputs = [_fp32_output("probabilities", [self._probabilities(r) for r in results])]
            if neutral:
                outputs.append(_bytes_output("neutral", [r.get("neutral") or "" for r in results]))
        else:
            names = list(self.archive.metadata.model_dump().get("inputs") or ["face"])
            crops = {}
            for name in names:
                crop = _uint8(payload, name)
                crops[name] = base64.b64encode(_png(crop[0] if crop.ndim > 2 else crop)).decode()
            result = self._handle(json.dumps(crops).encode())
            outputs = [_bytes_output("image", [result["image"]])]
            if result.get("probabilities"):
                outputs.append(_fp32_output("probabilities", [self._probabilities(result)]))
        return InferenceResponse(model_name=self.name, model_version=self.version, outputs=outputs)


def _png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()
