"""A real gateway for the tests of what people use (the page, the client, the commands).

`gateway` (session scope) runs `fer-service serve` as `make run` does (embedded: models in
process, jobs in process) on a free loopback port, over a model store holding the
repository's `compact.mar` and `derl.mar` and the tiny test `tdgan.mar`
(tests/conftest.py), so that transfer jobs run too. Its default model is `compact`
(`FER_DEFAULT_MODEL`), unlike a gateway started with the defaults (`derl`): the commands'
tests tell from that which one answered. It is stopped at the end. `busy_gateway` is one
whose job queue is soon full (the client's retries and timeouts).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from served import GATEWAY_DEFAULT, REPO, Gateway

from service.launcher.config import free_ports


@pytest.fixture(scope="session")
def gateway_store(
    transfer_store: Callable[[float], Path],
    frontalize_store: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """The shipped classifiers and the tiny test transfer and frontalization models."""
    store = tmp_path_factory.mktemp("gateway-store")
    for archive in (REPO / "model_store" / "compact.mar", REPO / "model_store" / "derl.mar"):
        (store / archive.name).symlink_to(archive)
    (store / "tdgan.mar").symlink_to(transfer_store(0.0) / "tdgan.mar")
    (store / "frontalize.mar").symlink_to(frontalize_store / "frontalize.mar")
    return store


@contextlib.contextmanager
def serve(store: Path, log: Path, **settings: str) -> Iterator[Gateway]:
    """`fer-service serve` over `store` on a free port with these `FER_*` settings (by
    name without the prefix), until the block ends; `log` gets its output."""
    port = free_ports(1)[0]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FER_")}
    env.update({f"FER_{name.upper()}": value for name, value in settings.items()})
    env.update(FER_MODEL_STORE=str(store), FER_JOBS="local")
    command = [sys.executable, "-m", "service", "serve", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                pytest.fail(f"the gateway exited ({process.returncode}): {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the gateway is not ready after 90 s: {log.read_text()[-2000:]}")
            time.sleep(0.3)
        yield Gateway(url, store)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="session")
def gateway(gateway_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """`fer-service serve` on a free port; see the module docstring."""
    log = tmp_path_factory.mktemp("gateway") / "serve.log"
    with serve(gateway_store, log, default_model=GATEWAY_DEFAULT) as running:
        yield running


@pytest.fixture(scope="module")
def busy_gateway(
    transfer_store: Callable[[float], Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    """A gateway whose transfer network takes 2 s a call, running one job at a time with
    one more waiting (a third is refused: 503 `queue-full`, `Retry-After: 1`)."""
    log = tmp_path_factory.mktemp("busy-gateway") / "serve.log"
    # with a classifier: a gateway that cannot classify is not ready (/readyz 503)
    store = tmp_path_factory.mktemp("busy-store")
    (store / "compact.mar").symlink_to(REPO / "model_store" / "compact.mar")
    (store / "tdgan.mar").symlink_to(transfer_store(2.0) / "tdgan.mar")
    settings = {"job_queue_size": "1", "job_workers": "1", "retry_after": "1"}
    with serve(store, log, **settings) as running:
        yield running
