"""A real TorchServe for the integration tests, started once per session.

`torchserve` (session scope) starts TorchServe 0.12 from this venv on free loopback ports,
in a private working folder (its own TMPDIR, logs and config, written from the project's
`model_store/config.properties`), loads `compact` from `model_store/compact.mar`, waits
until its worker is READY and stops it at the end, checking that no process it started
(Java frontend, Python workers) survives. Use its `inference_url`, `management_url` and
`metrics_url` (base URLs, no trailing slash) and `model_store`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from service.torchserve import (
    CONFIG_NAME,
    TorchServe,
    free_ports,
    local_config,
)

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


def untrained_archive(store: Path) -> Path:
    """`compact.mar` exported from an untrained network (used when the model store has none,
    as on a fresh clone: the trained archive is not committed)."""
    import torch

    from training.export import export
    from training.train import checkpoint
    from training.train.classifier import ClassifierConfig, build_net, metadata

    torch.manual_seed(0)
    cfg = ClassifierConfig(net="compact")
    meta = metadata(cfg, 48)
    net = build_net(meta["net"]["module"], meta["net"]["kwargs"])
    ckpt = store.parent / "untrained.pt"
    checkpoint.save({"model": net.state_dict(), "metadata": meta}, ckpt)
    return export(ckpt, MODEL, "0.0-untrained", store)


@pytest.fixture(scope="session")
def processes_mentioning() -> Callable[[str], list[str]]:
    """Command lines of live processes whose command line contains a given text."""
    return _processes_mentioning


@pytest.fixture(scope="session")
def model_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model store the session's TorchServe serves (the repository's, if it has compact)."""
    if (MODEL_STORE / f"{MODEL}.mar").exists():
        return MODEL_STORE
    store = tmp_path_factory.mktemp("model_store")
    untrained_archive(store)
    return store


@pytest.fixture(scope="session")
def torchserve(model_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TorchServe]:
    """A running TorchServe serving `compact`; see the module docstring."""
    cfg = local_config(
        model_store,
        MODEL_STORE / CONFIG_NAME,
        models=[MODEL],
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
