"""The bytes the inference backends send to the handlers, and what they read back.

One place for the handlers' request bodies, which every backend that talks to the
archives' handlers (in process, TorchServe) sends alike: a photo's crops as one `.npy`
uint8 tensor (`predict_request`), a track's crops likewise (`sequence_request`), named
crops as base64 PNGs for the generators (`generation_request`); and for the answers
parsed back into the gateway's schemas.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image
from pydantic import ValidationError

from service.problems import BackendError
from service.schemas import Generation, Prediction


def encode_crop(crop: np.ndarray) -> bytes:
    """A face crop as the PNG file the handlers take as a request body."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(crop, dtype=np.uint8)).save(
        buf, format="PNG", compress_level=1
    )
    return buf.getvalue()


def crops_tensor(crops: Sequence[np.ndarray]) -> bytes:
    """Face crops (uint8, all the same shape) as one `.npy` file, [N, S, S] or [N, S, S, 3]."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(np.stack(crops), dtype=np.uint8), allow_pickle=False)
    return buf.getvalue()


def predict_request(crops: Sequence[np.ndarray], neutral: bool = False) -> tuple[bytes, str]:
    """The body and content type a classifier handler takes for a photo's crops: the `.npy`
    tensor itself, or JSON `{"crops": base64 .npy, "neutral": true}` to also get DeRL's
    neutral faces. The handler answers with a list of one result per crop."""
    tensor = crops_tensor(crops)
    if not neutral:
        return tensor, "application/x-npy"
    body = {"crops": base64.b64encode(tensor).decode("ascii"), "neutral": True}
    return json.dumps(body).encode(), "application/json"


def generation_request(inputs: Mapping[str, np.ndarray]) -> bytes:
    """The JSON body a generating handler takes: `{name: base64 PNG of the crop}`."""
    return json.dumps(
        {name: base64.b64encode(encode_crop(crop)).decode("ascii") for name, crop in inputs.items()}
    ).encode()


def sequence_request(crops: Sequence[np.ndarray]) -> bytes:
    """The body a sequence handler takes: the track's crops, in time order, as one `.npy`
    tensor (as `predict` sends a photo's)."""
    return crops_tensor(crops)


def generation(rows: Any, source: str) -> Generation:
    row = one_row(rows)
    try:
        return Generation.model_validate(row)
    except ValidationError as exc:
        raise BackendError(f"{source} returned a malformed image: {exc}") from exc


def one_row(rows: Any) -> Any:
    """The handler's answer to a single request row."""
    return rows[0] if isinstance(rows, list) and len(rows) == 1 else rows


def predictions(rows: Any, expected: int, source: str) -> list[Prediction]:
    if not isinstance(rows, list) or len(rows) != expected:
        raise BackendError(f"{source} returned {type(rows).__name__}, not {expected} results")
    try:
        return [Prediction.model_validate(r) for r in rows]
    except ValidationError as exc:
        raise BackendError(f"{source} returned a malformed prediction: {exc}") from exc
