"""Inference backends: where the models of the model store run.

`InferenceBackend` is all the gateway knows: start with the models to serve, predict
aligned face crops with one model (or generate a face from named crops, for the transfer
and frontalization jobs, or classify a sequence of crops, one face track of a video),
report whether a model is ready, close. Two backends implement
it and differ only in transport:

- `LocalBackend` unpacks the `.mar` files with `service.archive.open_archive` and runs
  their handlers in this process, off the event loop, one call at a time per model;
- `TorchServeBackend` posts the crops to TorchServe's inference API (which batches
  concurrent requests) through one shared `httpx.AsyncClient`, and asks its management
  API for readiness.

Both send the handler the same bytes, so their answers agree: for `predict`, every crop of
a photo in one uint8 tensor as a NumPy `.npy` file (one request per photo, not one PNG per
face: no image codec on either side), or JSON `{"crops": base64 .npy, "neutral": true}`
when DeRL's neutral faces are asked for; for `classify_sequence`, the crops of one face
track as such a tensor too; for `generate`, one JSON object of base64 PNGs by input name.
Failures are `BackendError`s (service/problems.py), served as 502/503/504 problems.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
import numpy as np

from service.archive import LoadedArchive, open_archive
from service.catalog import ModelEntry
from service.problems import BackendError, BackendTimeout, BackendUnavailable, ModelNotReady
from service.schemas import Generation, Prediction
from service.settings import Settings
from service.wire import (
    generation,
    generation_request,
    one_row,
    predict_request,
    predictions,
    sequence_request,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelStatus:
    """Whether a model can answer now, and why not."""

    ready: bool
    detail: str


class InferenceBackend(Protocol):
    """Runs the models of the model store on aligned face crops."""

    async def start(self, models: Sequence[ModelEntry]) -> None:
        """Prepare to serve `models` (load them, or open connections)."""
        ...

    async def close(self) -> None:
        """Release what `start` acquired."""
        ...

    async def predict(
        self, model: ModelEntry, crops: Sequence[np.ndarray], neutral: bool = False
    ) -> list[Prediction]:
        """One prediction per crop; each crop is uint8 [S, S] (gray) or [S, S, 3] (RGB) as
        `model.input` asks. `neutral`: also the de-expressed face (DeRL models)."""
        ...

    async def generate(self, model: ModelEntry, inputs: Mapping[str, np.ndarray]) -> Generation:
        """The image a generating model (transfer, frontalizer) makes from named crops, each
        uint8 as `model.input` asks (e.g. `{"face": ..., "expression": ...}`)."""
        ...

    async def classify_sequence(self, model: ModelEntry, crops: Sequence[np.ndarray]) -> Prediction:
        """The expression of one face over time: a sequence model on its crops, in order."""
        ...

    async def status(self, model: ModelEntry) -> ModelStatus:
        """Whether `model` can answer now."""
        ...


class LocalBackend:
    """Runs the archives' own handlers in this process (the embedded default)."""

    def __init__(
        self,
        cache_dir: Path | None = None,
        runtime: str = "auto",
        threads: int = 0,
        device: str = "cpu",
        torch_threads: int = 0,
    ) -> None:
        self.cache_dir = cache_dir
        self.torch_threads = torch_threads
        # Where the handlers run their networks (service/handlers/runtime.py), and on which
        # device: TorchServe's `gpu_id` property, which the handlers read.
        self.properties: dict[str, Any] = {
            "fer_runtime": runtime,
            "fer_threads": threads,
            "gpu_id": gpu_id(device),
        }
        self._loaded: dict[str, LoadedArchive] = {}
        self._failed: dict[str, str] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def start(self, models: Sequence[ModelEntry]) -> None:
        """Load every archive (in a worker thread); one that fails is reported not ready."""
        if self.torch_threads and models:
            import torch  # only here: a gateway with the TorchServe backend needs no torch

            # Process-wide: PyTorch's idle OpenMP threads otherwise spin on the cores that
            # the detector and ONNX Runtime need (measured: 32 -> 23 ms a one-face photo).
            torch.set_num_threads(self.torch_threads)
        for entry in models:
            try:
                loaded = await asyncio.to_thread(
                    open_archive, entry.path, self.cache_dir, self.properties
                )
            except Exception as exc:  # noqa: BLE001 - a broken archive must not stop the rest
                log.exception("cannot load %s", entry.path)
                # The exception names files of the server: the log has it, not the client.
                self._failed[entry.name] = f"failed to load ({type(exc).__name__})"
                continue
            self._loaded[entry.name] = loaded
            self._locks[entry.name] = asyncio.Lock()
            log.info("loaded %s %s from %s", entry.name, entry.version, entry.path)

    async def close(self) -> None:
        """Drop the loaded models."""
        self._loaded.clear()
        self._locks.clear()

    async def predict(
        self, model: ModelEntry, crops: Sequence[np.ndarray], neutral: bool = False
    ) -> list[Prediction]:
        """Run all crops through the model's handler as one batch, off the event loop."""
        loaded = self._loaded.get(model.name)
        if loaded is None:
            detail = self._failed.get(model.name, "not loaded")
            raise ModelNotReady(f"model '{model.name}' {detail}")
        if not crops:
            return []
        rows = await self._handle(loaded, [{"body": predict_request(crops, neutral)[0]}])
        return predictions(one_row(rows), len(crops), f"model '{model.name}'")

    async def generate(self, model: ModelEntry, inputs: Mapping[str, np.ndarray]) -> Generation:
        """One request with every named crop, through the model's handler."""
        loaded = self._loaded.get(model.name)
        if loaded is None:
            detail = self._failed.get(model.name, "not loaded")
            raise ModelNotReady(f"model '{model.name}' {detail}")
        rows = await self._handle(loaded, [{"body": generation_request(inputs)}])
        return generation(rows, f"model '{model.name}'")

    async def classify_sequence(self, model: ModelEntry, crops: Sequence[np.ndarray]) -> Prediction:
        """One request with the whole sequence, through the model's handler."""
        loaded = self._loaded.get(model.name)
        if loaded is None:
            detail = self._failed.get(model.name, "not loaded")
            raise ModelNotReady(f"model '{model.name}' {detail}")
        rows = await self._handle(loaded, [{"body": sequence_request(crops)}])
        return predictions(rows, 1, f"model '{model.name}'")[0]

    async def _handle(self, loaded: LoadedArchive, batch: list[dict[str, Any]]) -> Any:
        async with self._locks[loaded.name]:  # handlers are not meant to run concurrently
            try:
                return await asyncio.to_thread(loaded.handler.handle, batch, loaded.context)
            except Exception as exc:  # noqa: BLE001 - the handler's failure, not the client's
                log.exception("model %s failed", loaded.name)
                raise BackendError(f"model '{loaded.name}' failed ({type(exc).__name__})") from exc

    async def status(self, model: ModelEntry) -> ModelStatus:
        """Ready once its archive is loaded."""
        if model.name in self._loaded:
            return ModelStatus(True, "loaded")
        return ModelStatus(False, self._failed.get(model.name, "not loaded"))


class HttpBackend:
    """What the backends that talk to a model server over HTTP share: one pooled
    `httpx.AsyncClient` with the FER_TORCHSERVE_* timeouts and connection limit, opened by
    `start` and closed by `close` (the server loads the models itself)."""

    name = "the model server"

    def __init__(
        self,
        timeout: float = 30.0,
        connect_timeout: float = 2.0,
        max_connections: int = 64,
        retry_after: int = 5,
    ) -> None:
        self.timeout = httpx.Timeout(timeout, connect=connect_timeout)
        self.limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self.retry_after = retry_after
        self._client: httpx.AsyncClient | None = None

    @staticmethod
    def client_settings(settings: Settings) -> dict[str, Any]:
        """The client's keyword arguments from `settings`."""
        return {
            "timeout": settings.torchserve_timeout,
            "connect_timeout": settings.torchserve_connect_timeout,
            "max_connections": settings.torchserve_max_connections,
            "retry_after": settings.retry_after,
        }

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            raise BackendUnavailable(f"the client of {self.name} is not started", self.retry_after)
        return self._client

    async def start(self, models: Sequence[ModelEntry]) -> None:
        """Open the shared client."""
        self._client = httpx.AsyncClient(timeout=self.timeout, limits=self.limits)

    async def close(self) -> None:
        """Close the shared client."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def message(self, response: httpx.Response) -> str:
        """The server's error message in an answer (one line)."""
        return response.text[:300]

    async def post(self, model: ModelEntry, url: str, **request: Any) -> Any:
        """POST to the server for `model`; its JSON answer, or the gateway's problem for a
        failure (404 model-not-ready, 503/507 unavailable, 408/504 timeout, others
        backend-error). Details name the server's address: they go to the log only."""
        try:
            response = await self.client.post(url, **request)
        except httpx.TimeoutException as exc:
            log.warning("%s (%s) timed out: %r", self.name, url, exc)
            raise BackendTimeout(
                f"{self.name} did not answer for model '{model.name}' in time"
            ) from exc
        except httpx.TransportError as exc:
            log.warning("cannot reach %s (%s): %r", self.name, url, exc)
            raise BackendUnavailable(
                "the inference backend cannot be reached", self.retry_after
            ) from exc
        status = response.status_code
        if status == 200:
            try:
                return response.json()
            except ValueError as exc:
                raise BackendError(f"{self.name} returned a body that is not JSON") from exc
        message = self.message(response)
        if status == 404:
            raise ModelNotReady(
                f"{self.name} has no model '{model.name}' version '{model.version}': {message}",
                self.retry_after,
            )
        if status in (503, 507):  # no worker free / worker died / out of memory
            raise BackendUnavailable(
                f"{self.name} cannot serve '{model.name}' now ({status}): {message}",
                self.retry_after,
            )
        if status in (408, 504):
            raise BackendTimeout(f"{self.name} timed out on '{model.name}' ({status}): {message}")
        log.warning("%s answered %d for model %s: %s", self.name, status, model.name, message)
        raise BackendError(f"{self.name} answered {status} for model '{model.name}'")


class TorchServeBackend(HttpBackend):
    """Sends crops to a TorchServe that serves the same `.mar` files."""

    name = "TorchServe"

    def __init__(self, inference_url: str, management_url: str, **client: Any) -> None:
        super().__init__(**client)
        self.inference_url = inference_url.rstrip("/")
        self.management_url = management_url.rstrip("/")

    @classmethod
    def from_settings(cls, settings: Settings) -> TorchServeBackend:
        """A backend for the TorchServe that `settings` point at."""
        return cls(
            str(settings.torchserve_url),
            str(settings.torchserve_management_url),
            **cls.client_settings(settings),
        )

    def _model_path(self, model: ModelEntry) -> str:
        return f"{model.name}/{model.version}" if model.version else model.name

    async def predict(
        self, model: ModelEntry, crops: Sequence[np.ndarray], neutral: bool = False
    ) -> list[Prediction]:
        """One request with every crop; TorchServe batches concurrent requests."""
        if not crops:
            return []
        rows = await self._predict_one(model, *predict_request(crops, neutral))
        return predictions(rows, len(crops), "TorchServe")

    async def generate(self, model: ModelEntry, inputs: Mapping[str, np.ndarray]) -> Generation:
        """One JSON request with every named crop."""
        row = await self._predict_one(model, generation_request(inputs), "application/json")
        return generation(row, "TorchServe")

    async def classify_sequence(self, model: ModelEntry, crops: Sequence[np.ndarray]) -> Prediction:
        """One JSON request with the whole sequence."""
        row = await self._predict_one(model, sequence_request(crops), "application/x-npy")
        return predictions(row if isinstance(row, list) else [row], 1, "TorchServe")[0]

    async def _predict_one(
        self, model: ModelEntry, body: bytes, content_type: str = "image/png"
    ) -> Any:
        url = f"{self.inference_url}/predictions/{self._model_path(model)}"
        return await self.post(model, url, content=body, headers={"Content-Type": content_type})

    def message(self, response: httpx.Response) -> str:
        return _torchserve_message(response)

    async def status(self, model: ModelEntry) -> ModelStatus:
        """Ready when TorchServe's management API lists a READY worker for the model."""
        url = f"{self.management_url}/models/{self._model_path(model)}"
        try:
            response = await self.client.get(url)
        except (httpx.HTTPError, BackendError) as exc:
            log.info("cannot reach the TorchServe management API: %r", exc)
            return ModelStatus(False, "cannot reach the TorchServe management API")
        if response.status_code != 200:
            message = _torchserve_message(response)
            return ModelStatus(False, f"TorchServe answered {response.status_code}: {message}")
        try:
            described = response.json()
            workers = [w for d in described for w in d.get("workers", [])]
        except (ValueError, TypeError, AttributeError):
            return ModelStatus(False, "TorchServe's model description is not readable")
        ready = sum(1 for w in workers if w.get("status") == "READY")
        if ready:
            return ModelStatus(True, f"{ready} of {len(workers)} TorchServe workers ready")
        return ModelStatus(False, f"no ready TorchServe worker (of {len(workers)})")


def _torchserve_message(response: httpx.Response) -> str:
    """TorchServe's error JSON `{"code", "type", "message"}` as one line, or the raw text."""
    try:
        body = response.json()
        if isinstance(body, dict) and "message" in body:
            return str(body["message"])[:300]
    except ValueError:
        pass
    return response.text[:300]


def gpu_id(device: str) -> int | None:
    """The GPU the embedded backend's handlers use for FER_DEVICE `device` (`auto`: the
    first GPU when torch sees one; `cuda`: that GPU, or an error without one)."""
    if device == "cpu":
        return None
    import torch  # only here: a gateway with the TorchServe backend needs no torch

    if torch.cuda.is_available():
        return 0
    if device == "cuda":
        raise RuntimeError("FER_DEVICE=cuda, but torch sees no CUDA device")
    return None


def make_backend(settings: Settings) -> InferenceBackend:
    """The backend `settings.backend` names."""
    if settings.backend == "torchserve":
        return TorchServeBackend.from_settings(settings)
    if settings.backend == "oip":
        from service.oip import OipBackend  # it builds on this module's ModelStatus

        return OipBackend.from_settings(settings)
    return LocalBackend(
        runtime=settings.model_runtime,
        threads=settings.model_threads,
        device=settings.device,
        torch_threads=settings.torch_threads,
    )
