"""Every archive the repository ships (`model_store/*.mar`, as committed) loads in a real
TorchServe with the project's `config.properties` (`load_models=all`, as `docker compose`
serves the store) and answers there as its own handler answers in-process.

The session's TorchServe serves small test archives under the same names; this module
starts a private one over a copy of the shipped store, so each archive is checked exactly
as it is shipped (its handler files, weights and batching)."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.catalog import ModelEntry, scan
from service.faces import RetinaFaceDetector, crops_for
from service.inference import LocalBackend, TorchServeBackend
from service.launcher.config import CONFIG_NAME, free_ports, local_config
from service.launcher.process import TorchServe
from service.schemas import Prediction

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "model_store"
DATA = REPO / "tests" / "data"
PHOTOS = ["astronaut.jpg", "grace_hopper.jpg", "multi_face.jpg"]
TOLERANCE = 1e-5
ARCHIVES = sorted(p.stem for p in SHIPPED.glob("*.mar"))


@pytest.fixture(scope="module")
def shipped_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("shipped_store")
    for path in SHIPPED.glob("*.mar"):
        shutil.copy(path, store / path.name)
    return store


@pytest.fixture(scope="module")
def shipped_torchserve(
    shipped_store: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TorchServe]:
    cfg = local_config(shipped_store, SHIPPED / CONFIG_NAME, ports=free_ports(5))
    cfg.number_of_gpu = 0  # the in-process reference runs on the CPU
    env = {k: v for k, v in os.environ.items() if not k.startswith("TS_")}
    server = TorchServe(cfg, workdir=tmp_path_factory.mktemp("ts-shipped"), env=env)
    server.start()
    try:
        server.wait_ready(timeout=180)
        yield server
    finally:
        server.stop()


def face_crops(entry: ModelEntry) -> list[np.ndarray]:
    """The aligned crops, as `entry` frames them, of the faces of real photos (7)."""
    detector = RetinaFaceDetector()
    crops: list[np.ndarray] = []
    for name in PHOTOS:
        image = Image.open(DATA / name).convert("RGB")
        crops += crops_for(image, detector.detect(np.asarray(image)), entry.input)
    return crops


async def answers(
    entry: ModelEntry, server: TorchServe, crops: list[np.ndarray]
) -> tuple[list[Prediction], list[Prediction]]:
    """The predictions of the in-process handler and of TorchServe for `crops`: one per
    crop from a classifier, one for the whole track from a sequence model."""
    local = LocalBackend()
    remote = TorchServeBackend(server.inference_url, server.management_url)
    await local.start([entry])
    await remote.start([entry])
    try:
        if entry.is_classifier:
            return await local.predict(entry, crops), await remote.predict(entry, crops)
        if entry.kind == "sequence":
            track = crops[:4]
            return (
                [await local.classify_sequence(entry, track)],
                [await remote.classify_sequence(entry, track)],
            )
        raise AssertionError(f"no check for a shipped {entry.kind} archive: add one here")
    finally:
        await local.close()
        await remote.close()


def test_every_archive_is_shipped_and_ready(shipped_torchserve: TorchServe) -> None:
    assert {"derl", "compact"} <= set(ARCHIVES)
    for name in ARCHIVES:
        assert shipped_torchserve.ready_workers(name) >= 1, name


@pytest.mark.parametrize("name", ARCHIVES)
def test_shipped_archive_answers_as_in_process(
    name: str, shipped_torchserve: TorchServe, shipped_store: Path
) -> None:
    entry = scan(shipped_store)[name]
    crops = face_crops(entry)
    assert len(crops) == 7
    mine, theirs = asyncio.run(answers(entry, shipped_torchserve, crops))
    assert len(mine) == len(theirs) >= 1
    worst = 0.0
    for a, b in zip(mine, theirs, strict=True):
        assert a.label == b.label
        worst = max(worst, *(abs(a.probabilities[c] - b.probabilities[c]) for c in entry.classes))
    print(f"\n{name}: max |TorchServe - in-process| = {worst:.2g} over {len(mine)} answers")
    assert worst <= TOLERANCE
