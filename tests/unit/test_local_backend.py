"""LocalBackend runs the archives' own handlers in process."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest

from service.catalog import scan
from service.inference import LocalBackend, gpu_id
from service.problems import ModelNotReady
from service.settings import DEFAULT_MODEL_STORE


def test_local_backend_predicts_and_reports_readiness() -> None:
    entries = scan(DEFAULT_MODEL_STORE)
    if "compact" not in entries:
        pytest.fail(f"no compact.mar in {DEFAULT_MODEL_STORE}: run `make models`")
    compact = entries["compact"]
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 256, (48, 48), dtype=np.uint8) for _ in range(3)]

    async def scenario() -> None:
        backend = LocalBackend()
        assert not (await backend.status(compact)).ready
        with pytest.raises(ModelNotReady):
            await backend.predict(compact, crops)
        await backend.start([compact])
        assert (await backend.status(compact)).ready
        assert await backend.predict(compact, []) == []
        predictions = await backend.predict(compact, crops)
        assert len(predictions) == 3
        for p in predictions:
            assert set(p.probabilities) == set(compact.classes)
            assert math.isclose(sum(p.probabilities.values()), 1.0, abs_tol=1e-9)
            assert p.label == max(p.probabilities, key=p.probabilities.__getitem__)
        # concurrent calls are serialised per model and each gets its own answer
        many = await asyncio.gather(*(backend.predict(compact, [c]) for c in crops))
        for one, batched in zip(many, predictions, strict=True):
            assert one[0].label == batched.label
        await backend.close()

    asyncio.run(scenario())


def test_the_runtime_settings_reach_the_handlers() -> None:
    """FER_MODEL_RUNTIME and FER_DEVICE, as the embedded backend passes them on."""
    compact = scan(DEFAULT_MODEL_STORE)["compact"]

    async def engine(runtime: str) -> str:
        backend = LocalBackend(runtime=runtime, threads=1, device="cpu")
        await backend.start([compact])
        try:
            return str(backend._loaded["compact"].handler.engine)
        finally:
            await backend.close()

    assert asyncio.run(engine("torch")) == "torch"
    assert asyncio.run(engine("onnx")) == "onnx"


def test_torch_threads_apply_to_the_process() -> None:
    import torch

    compact = scan(DEFAULT_MODEL_STORE)["compact"]
    before = torch.get_num_threads()
    try:
        backend = LocalBackend(torch_threads=1)
        asyncio.run(backend.start([compact]))
        assert torch.get_num_threads() == 1
        asyncio.run(backend.close())
    finally:
        torch.set_num_threads(before)


def test_device_selection() -> None:
    import torch

    assert gpu_id("cpu") is None
    if torch.cuda.is_available():
        assert gpu_id("auto") == 0 and gpu_id("cuda") == 0
    else:
        assert gpu_id("auto") is None
        with pytest.raises(RuntimeError, match="no CUDA device"):
            gpu_id("cuda")
