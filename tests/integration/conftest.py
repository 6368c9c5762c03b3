"""A real TorchServe for the integration tests, started once per session.

`torchserve` (session scope) starts TorchServe 0.12 from this venv on free loopback ports,
in a private working folder (its own TMPDIR, logs and config, written from the project's
`model_store/config.properties`), loads `compact` from `model_store/compact.mar`, and a
tiny test `derl`, `tdgan`, `frontalize` and `sequence` (all exported by this checkout's
`training/export.py`, so they carry its handlers), waits until their workers are
READY and stops it at the end, checking that no process it started (Java frontend, Python
workers) survives. Use its `inference_url`, `management_url` and `metrics_url` (base URLs,
no trailing slash) and `model_store`.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from service.launcher.config import CONFIG_NAME, free_ports, local_config
from service.launcher.process import TorchServe

REPO = Path(__file__).resolve().parents[2]
MODEL_STORE = REPO / "model_store"
MODEL = "compact"


def _processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that contain `text` (e.g. a private temp folder)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if text in cmdline and state != "Z":
            found.append(f"{entry.name}: {cmdline[:200]}")
    return found


@pytest.fixture(scope="session")
def processes_mentioning() -> Callable[[str], list[str]]:
    """Command lines of live processes whose command line contains a given text."""
    return _processes_mentioning


@pytest.fixture(scope="session")
def model_store(
    derl_store: Path,
    transfer_store: Callable[[float], Path],
    frontalize_store: Path,
    sequence_store: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """The store the session's TorchServe serves: the repository's trained `compact.mar`
    (exported before the shared handler base), and a tiny test `derl.mar` (the neutral-face
    path), `tdgan.mar` (the generator handler) and `frontalize.mar` (frontalize-then-
    classify) exported now."""
    shipped = MODEL_STORE / f"{MODEL}.mar"
    if not shipped.exists():
        pytest.fail(f"{shipped} is missing: it is committed; `make models` rebuilds it")
    store = tmp_path_factory.mktemp("model_store")
    shutil.copy(shipped, store / shipped.name)
    shutil.copy(derl_store / "derl.mar", store / "derl.mar")
    shutil.copy(transfer_store(0.0) / "tdgan.mar", store / "tdgan.mar")
    shutil.copy(frontalize_store / "frontalize.mar", store / "frontalize.mar")
    shutil.copy(sequence_store / "sequence.mar", store / "sequence.mar")
    return store


@pytest.fixture(scope="session")
def torchserve(model_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TorchServe]:
    """A running TorchServe serving `compact`; see the module docstring."""
    cfg = local_config(
        model_store,
        MODEL_STORE / CONFIG_NAME,
        models=[MODEL, "derl", "tdgan", "frontalize", "sequence"],
        ports=free_ports(5),
    )
    cfg.number_of_gpu = 0  # the reference runs on the CPU; so must TorchServe
    # TS_* variables would override the config (enable_envvars_config=true): keep ours.
    env = {k: v for k, v in os.environ.items() if not k.startswith("TS_")}
    server = TorchServe(cfg, workdir=tmp_path_factory.mktemp("torchserve"), env=env)
    started = time.monotonic()
    server.start()
    try:
        server.wait_ready(timeout=60)
        print(f"\nTorchServe ready in {time.monotonic() - started:.1f} s at {server.inference_url}")
        yield server
    finally:
        server.stop()
        leftovers = _processes_mentioning(str(server.workdir))
        assert not leftovers, f"TorchServe left processes behind: {leftovers}"
