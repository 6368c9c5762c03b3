"""The OIP v2 backend against a real MLServer (deploy/mlserver): the gateway in front of
an Open Inference Protocol server answers as the embedded gateway does.

MLServer runs from a virtualenv of its own (created on first use by
deploy/mlserver/serve.py, cached in ~/.cache/fer-service/mlserver-venv), serving the
shipped `compact` and `derl` and the tiny test `tdgan` and `sequence` archives.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.catalog import scan
from service.inference import LocalBackend
from service.launcher.config import free_ports
from service.oip import OipBackend
from service.settings import Settings

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data"


def _serve_module() -> Any:
    spec = importlib.util.spec_from_file_location(
        "fer_mlserver_serve", REPO / "deploy" / "mlserver" / "serve.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def oip_store(
    transfer_store: Callable[[float], Path],
    sequence_store: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    store = tmp_path_factory.mktemp("oip-store")
    for name in ("compact", "derl"):
        shutil.copy(REPO / "model_store" / f"{name}.mar", store)
    shutil.copy(transfer_store(0.0) / "tdgan.mar", store)
    shutil.copy(sequence_store / "sequence.mar", store)
    return store


@pytest.fixture(scope="module")
def mlserver(oip_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A running MLServer serving `oip_store`; its base URL."""
    serve = _serve_module()
    python = serve.ensure_venv(serve.DEFAULT_VENV)
    # three ports free now (not port+1, port+2: an ephemeral client port may hold those)
    port, grpc, metrics = free_ports(3)
    repo = tmp_path_factory.mktemp("mlserver-repo")
    names = serve.write_repository(oip_store, repo, port, grpc_port=grpc, metrics_port=metrics)
    assert sorted(names) == ["compact", "derl", "sequence", "tdgan"]
    cmd, env = serve.command(python, repo)
    log = (repo / "mlserver.log").open("wb")
    process = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while not all(_ready(f"{url}/v2/models/{n}/ready") for n in names):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"MLServer did not start: {(repo / 'mlserver.log').read_text()[-3000:]}"
                )
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def test_classify_through_mlserver_answers_as_embedded(mlserver: str, oip_store: Path) -> None:
    data = (DATA / "multi_face.jpg").read_bytes()
    common: dict[str, Any] = {"model_store": oip_store, "models": ["compact", "derl"]}
    local = create_app(Settings(backend="local", **common))
    remote = create_app(Settings(backend="oip", oip_url=mlserver, **common))  # type: ignore[arg-type]
    with TestClient(local) as a, TestClient(remote) as b:
        assert b.get("/readyz").json()["capabilities"]["classify"]["ok"]
        for params in ({}, {"model": "compact"}, {"neutral": "true"}):
            mine = a.post("/classify", files={"image": ("m.jpg", data)}, params=params)
            theirs = b.post("/classify", files={"image": ("m.jpg", data)}, params=params)
            assert mine.status_code == theirs.status_code == 200, theirs.text
            x, y = mine.json()["faces"], theirs.json()["faces"]
            assert len(x) == len(y) == 5
            for fa, fb in zip(x, y, strict=True):
                assert fa["expression"] == fb["expression"]
                assert fa["neutral_face"] == fb["neutral_face"]
                for c, p in fa["probabilities"].items():
                    assert abs(p - fb["probabilities"][c]) < 1e-6


def test_generate_and_sequences_through_mlserver(mlserver: str, oip_store: Path) -> None:
    entries = scan(oip_store)
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 256, (48, 48), dtype=np.uint8) for _ in range(3)]
    tdgan, sequence = entries["tdgan"], entries["sequence"]

    async def both() -> tuple[Any, ...]:
        local, remote = LocalBackend(), OipBackend(mlserver)
        await local.start([tdgan, sequence])
        await remote.start([tdgan, sequence])
        try:
            size = tdgan.input.size
            inputs = {
                "face": rng.integers(0, 256, (size, size), dtype=np.uint8),
                "expression": rng.integers(0, 256, (size, size), dtype=np.uint8),
            }
            return (
                await local.generate(tdgan, inputs),
                await remote.generate(tdgan, inputs),
                await local.classify_sequence(sequence, crops),
                await remote.classify_sequence(sequence, crops),
                (await remote.status(tdgan)).ready,
            )
        finally:
            await local.close()
            await remote.close()

    gen_local, gen_remote, seq_local, seq_remote, ready = asyncio.run(both())
    assert ready
    assert gen_local.image == gen_remote.image
    assert seq_local.label == seq_remote.label
    for c, p in seq_local.probabilities.items():
        assert abs(p - seq_remote.probabilities[c]) < 1e-6


def test_unknown_model_is_not_ready(mlserver: str, oip_store: Path) -> None:
    entry = dataclasses.replace(scan(oip_store)["compact"], name="absent")

    async def status() -> bool:
        backend = OipBackend(mlserver)
        await backend.start([])
        try:
            return (await backend.status(entry)).ready
        finally:
            await backend.close()

    assert not asyncio.run(status())
