"""The Open Inference Protocol v2 backend: the gateway's models on an OIP v2 server.

OIP v2 (the KServe v2 protocol) is what Triton, KServe, MLServer and others serve over
REST: `POST /v2/models/<name>[/versions/<v>]/infer` with typed tensors in and out, `GET
/v2/models/<name>/ready`. `OipBackend` implements the gateway's `InferenceBackend` on it,
so the same gateway runs in front of TorchServe or of any such server; the tensors are
those `deploy/mlserver/fer_runtime.py` (the archives in MLServer) takes and gives:

- `predict`: input `crops` UINT8 `[N, S, S]`, parameter `neutral`; outputs
  `probabilities` FP32 `[N, classes]` in the archive's class order (the gateway reads the
  classes from the archive, as it reads the crop size), and `neutral` BYTES `[N]`;
- `classify_sequence`: `crops` `[T, S, S]` of one track; `probabilities` `[1, classes]`;
- `generate`: one UINT8 input per named crop, `[1, S, S(, 3)]`; `image` BYTES `[1]` (a
  base64 PNG) and, for models that classify, `probabilities`.

Failures map to the gateway's problems as TorchServe's do: 404 model-not-ready, 503
unavailable, 408/504 timeout, other answers backend-error; addresses stay in the log.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
import numpy as np

from service.catalog import ModelEntry
from service.inference import HttpBackend, ModelStatus
from service.problems import BackendError
from service.schemas import Generation, Prediction
from service.settings import Settings

log = logging.getLogger(__name__)


def tensor(name: str, array: np.ndarray) -> dict[str, Any]:
    """A UINT8 input tensor in OIP v2's JSON form."""
    a = np.ascontiguousarray(array, dtype=np.uint8)
    return {"name": name, "shape": list(a.shape), "datatype": "UINT8", "data": a.ravel().tolist()}


def output(body: Any, name: str) -> dict[str, Any] | None:
    """The output tensor `name` of an infer response, or None."""
    outputs = body.get("outputs") if isinstance(body, dict) else None
    for out in outputs or []:
        if isinstance(out, dict) and out.get("name") == name:
            return out
    return None


def probabilities(body: Any, rows: int, classes: Sequence[str]) -> np.ndarray:
    """The `probabilities` output as `[rows, classes]` float64."""
    out = output(body, "probabilities")
    try:
        probs = np.asarray(out["data"] if out else None, dtype=np.float64)
        return probs.reshape(rows, len(classes))
    except (TypeError, ValueError) as exc:
        raise BackendError(
            f"the OIP server's probabilities are not [{rows}, {len(classes)}]"
        ) from exc


def _by_class(row: np.ndarray, classes: Sequence[str]) -> Prediction:
    probs = {c: float(p) for c, p in zip(classes, row, strict=True)}
    return Prediction(probabilities=probs, label=max(probs, key=probs.__getitem__))


class OipBackend(HttpBackend):
    """Sends the crops to an OIP v2 server (REST) that serves the store's archives."""

    name = "the OIP server"

    def __init__(self, url: str, **client: Any) -> None:
        super().__init__(**client)
        self.url = url.rstrip("/")

    @classmethod
    def from_settings(cls, settings: Settings) -> OipBackend:
        """A backend for the OIP v2 server `settings.oip_url` names."""
        return cls(str(settings.oip_url), **cls.client_settings(settings))

    def _path(self, model: ModelEntry) -> str:
        version = f"/versions/{model.version}" if model.version else ""
        return f"{self.url}/v2/models/{model.name}{version}"

    async def predict(
        self, model: ModelEntry, crops: Sequence[np.ndarray], neutral: bool = False
    ) -> list[Prediction]:
        """Every crop in one `crops` tensor; one prediction per crop."""
        if not crops:
            return []
        request = {
            "inputs": [tensor("crops", np.stack(crops))],
            "parameters": {"neutral": bool(neutral)},
        }
        body = await self._infer(model, request)
        probs = probabilities(body, len(crops), model.classes)
        predictions = [_by_class(row, model.classes) for row in probs]
        faces = output(body, "neutral") if neutral else None
        if faces is not None:
            for p, face in zip(predictions, faces.get("data") or [], strict=False):
                p.neutral = face or None
        return predictions

    async def classify_sequence(self, model: ModelEntry, crops: Sequence[np.ndarray]) -> Prediction:
        """The track's crops as one `crops` tensor; one prediction for the sequence."""
        body = await self._infer(model, {"inputs": [tensor("crops", np.stack(crops))]})
        return _by_class(probabilities(body, 1, model.classes)[0], model.classes)

    async def generate(self, model: ModelEntry, inputs: Mapping[str, np.ndarray]) -> Generation:
        """One UINT8 input per named crop; the generated PNG."""
        request = {"inputs": [tensor(name, crop[None]) for name, crop in inputs.items()]}
        body = await self._infer(model, request)
        image = output(body, "image")
        data = (image or {}).get("data") or []
        if not data or not isinstance(data[0], str):
            raise BackendError("the OIP server returned no image")
        probs = None
        if output(body, "probabilities") is not None:
            row = probabilities(body, 1, model.classes)[0]
            probs = {c: float(p) for c, p in zip(model.classes, row, strict=True)}
        try:
            return Generation.model_validate({"image": data[0], "probabilities": probs})
        except ValueError as exc:
            raise BackendError(f"the OIP server returned a malformed image: {exc}") from exc

    async def _infer(self, model: ModelEntry, request: dict[str, Any]) -> Any:
        return await self.post(model, f"{self._path(model)}/infer", json=request)

    async def status(self, model: ModelEntry) -> ModelStatus:
        """Ready when the server says the model (that version) is ready."""
        try:
            response = await self.client.get(f"{self._path(model)}/ready")
        except (httpx.HTTPError, BackendError) as exc:
            log.info("cannot reach the OIP server: %r", exc)
            return ModelStatus(False, "cannot reach the OIP server")
        if response.status_code == 200:
            return ModelStatus(True, "ready on the OIP server")
        return ModelStatus(False, f"the OIP server answered {response.status_code}")
